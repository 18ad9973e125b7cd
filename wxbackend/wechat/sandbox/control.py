"""The sandbox's own API (``/sandbox/...``): what tests and the demo drive.

::

    GET    /sandbox                              config summary and endpoints
    GET    /sandbox/outbox?openid=&kind=         messages users received (kind: custom, template,
                                                 subscribe, or reply: a callback's passive reply)
    DELETE /sandbox/outbox
    POST   /sandbox/faults   {"api": "/cgi-bin/message/custom/send", "errcode": 45009, "times": 2}
    POST   /sandbox/faults   {"api": "/cgi-bin/user/info", "delay_seconds": 3}
    GET    /sandbox/faults ; DELETE /sandbox/faults
    GET    /sandbox/stats                        calls per API path
    GET    /sandbox/menu                         the last menu created
    GET    /sandbox/users ; GET /sandbox/users/{openid}
    POST   /sandbox/users/{openid}  {"following": true, "unionid": "..."}   (no callback)
    POST   /sandbox/tokens/{appid}/expire        current tokens answer 42001 from now on
    POST   /sandbox/mp/users/{openid}  {"unionid": "...", "grants": {"TPL": 2}}  a known user (no login)
    GET    /sandbox/mp/users/{openid}
    POST   /sandbox/mp/users/{openid}/login-code      {"unionid": ...}  -> {"code"}
    POST   /sandbox/mp/users/{openid}/grant-subscribe {"template_id": ...}
    POST   /sandbox/mp/users/{openid}/phone-code      {"phone": "13800138000"} -> {"code"}
    GET    /sandbox/mp/codes                     mini-program codes issued: {"codes": [{"page", "scene", ...}]}
    GET    /sandbox/qrcodes                      official-account QR codes alive: {"codes": [{"scene", "url", ...}]}
"""

from __future__ import annotations

import re
from dataclasses import asdict

from wxbackend.wechat.sandbox.base import ControlError, ControlHandler
from wxbackend.wechat.sandbox.world import Fault, MpUser

PHONE = re.compile(r"\d{5,15}")


class IndexHandler(ControlHandler):
    def get(self) -> None:
        config = self.world.config
        self.write_json({
            "sandbox": "WeChat API emulator", "oa_appid": config.oa_appid,
            "oa_original_id": config.oa_original_id, "mp_appid": config.mp_appid,
            "mode": config.mode, "callback_url": config.callback_url,
            "token_ttl": config.token_ttl, "docs": "docs/WECHAT-SANDBOX.md"})


class OutboxHandler(ControlHandler):
    def get(self) -> None:
        openid = self.get_query_argument("openid", "")
        kind = self.get_query_argument("kind", "")
        messages = [m for m in self.world.outbox
                    if (not openid or m["openid"] == openid) and (not kind or m["kind"] == kind)]
        self.write_json({"messages": messages})

    def delete(self) -> None:
        cleared = len(self.world.outbox)
        self.world.outbox.clear()
        self.write_json({"cleared": cleared})


class FaultsHandler(ControlHandler):
    def get(self) -> None:
        self.write_json({"faults": {api: [asdict(f) for f in queue]
                                    for api, queue in self.world.faults.items() if queue}})

    def post(self) -> None:
        body = self.json_body()
        api = self.require(body, "api")
        errcode = body.get("errcode")
        delay = body.get("delay_seconds", 0)
        times = body.get("times", 1)
        if errcode is not None and (isinstance(errcode, bool) or not isinstance(errcode, int)):
            raise ControlError(400, "errcode must be an integer")
        if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
            raise ControlError(400, "delay_seconds must be a number >= 0")
        if errcode is None and not delay:
            raise ControlError(400, "give errcode or delay_seconds")
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ControlError(400, "times must be an integer >= 1")
        fault = Fault(errcode, str(body.get("errmsg", "")), float(delay), times)
        self.world.add_fault(api, fault)
        self.write_json({"api": api, **asdict(fault)}, 201)

    def delete(self) -> None:
        self.world.faults.clear()
        self.write_json({"cleared": True})


class StatsHandler(ControlHandler):
    def get(self) -> None:
        self.write_json({"calls": dict(self.world.calls)})


class MenuHandler(ControlHandler):
    def get(self) -> None:
        self.write_json({"menu": self.world.menus.get(self.world.config.oa_appid)})


class UsersHandler(ControlHandler):
    def get(self) -> None:
        self.write_json({"users": [asdict(u) for u in self.world.oa_users.values()]})


class UserHandler(ControlHandler):
    def get(self, openid: str) -> None:
        user = self.world.oa_users.get(openid)
        if user is None:
            raise ControlError(404, f"unknown user {openid}")
        self.write_json(asdict(user))

    def post(self, openid: str) -> None:
        """Set a user's state without telling our server (a follower from before)."""
        body = self.json_body()
        user = self.world.oa_user(openid)
        if "following" in body:
            user.following = bool(body["following"])
            user.subscribe_time = int(self.world.clock()) if user.following else 0
        if body.get("unionid"):
            user.unionid = str(body["unionid"])
        user.last_action = self.world.clock()
        self.write_json(asdict(user))


class TokenExpireHandler(ControlHandler):
    def post(self, appid: str) -> None:
        if appid not in self.world.apps:
            raise ControlError(404, f"unknown appid {appid}")
        now = self.world.clock()
        expired = 0
        for token in self.world.tokens.values():
            if token.appid == appid and token.expires_at > now:
                token.expires_at = now
                expired += 1
        self.write_json({"expired": expired})


class MpUserHandler(ControlHandler):
    def get(self, openid: str) -> None:
        user = self.world.mp_users.get(openid)
        if user is None:
            raise ControlError(404, f"unknown mini-program user {openid}")
        self.write_json(_mp_user_json(user))

    def post(self, openid: str) -> None:
        """A mini-program user WeChat knows, with the subscribe grants they gave (a restart)."""
        body = self.json_body()
        grants = body.get("grants", {})
        if not isinstance(grants, dict) or not all(
                isinstance(t, str) and t and isinstance(n, int) and not isinstance(n, bool) and n >= 0
                for t, n in grants.items()):
            raise ControlError(400, "grants must map template ids to counts >= 0")
        user = self.world.mp_user(openid, body.get("unionid") or None)
        for template_id, count in grants.items():  # set, not add: the state WeChat keeps
            user.grants[template_id] = count
        self.write_json(_mp_user_json(user))


def _mp_user_json(user: MpUser) -> dict[str, object]:
    return {"openid": user.openid, "unionid": user.unionid, "grants": dict(user.grants)}


class MpLoginCodeHandler(ControlHandler):
    def post(self, openid: str) -> None:
        body = self.json_body()
        user = self.world.mp_user(openid, body.get("unionid") or None)
        code = self.world.issue_code("js", self.world.config.mp_appid, user.openid)
        self.write_json({"code": code, "openid": user.openid}, 201)


class MpGrantHandler(ControlHandler):
    def post(self, openid: str) -> None:
        body = self.json_body()
        template_id = self.require(body, "template_id")
        user = self.world.mp_user(openid)
        user.grants[template_id] += 1
        self.write_json({"template_id": template_id, "grants": user.grants[template_id]}, 201)


class MpPhoneCodeHandler(ControlHandler):
    def post(self, openid: str) -> None:
        body = self.json_body()
        phone = self.require(body, "phone")
        country = str(body.get("country_code", "86"))
        if not PHONE.fullmatch(phone) or not country.isdigit():
            raise ControlError(400, "phone must be digits (and country_code digits)")
        user = self.world.mp_user(openid)
        code = self.world.issue_code("phone", self.world.config.mp_appid, user.openid,
                                     phone=phone, country_code=country)
        self.write_json({"code": code}, 201)


class QrCodesHandler(ControlHandler):
    """The official-account QR codes still alive, oldest first: ``url`` is what a camera reads
    from the printed code (``POST /sandbox/users/{openid}/scan {"url": ...}`` scans it)."""

    def get(self) -> None:
        self.write_json({"codes": [
            {"ticket": ticket, "scene": code["scene"], "url": code["url"],
             "expires_at": code["expires_at"]}
            for ticket, code in self.world.qrcodes.items() if self.world.live_qrcode(ticket)]})


class MpCodesHandler(ControlHandler):
    """The mini-program codes issued, oldest first: the page and scene a phone scanning each opens."""

    def get(self) -> None:
        self.write_json({"codes": self.world.wxacodes})
