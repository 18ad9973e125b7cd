"""The sandbox's state: apps, tokens, users, single-use codes, outbox, limits, faults.

Handlers call these rules and let :class:`ApiError` become WeChat's
``{"errcode", "errmsg"}`` answer (HTTP 200, as WeChat answers errors)::

    world = World(config)
    app = world.authorize(access_token, "oa", "/cgi-bin/message/custom/send")
    world.record("custom", app, openid, body)

Everything lives in memory of the one sandbox process; Tornado runs handlers
on one thread, so no locking is needed.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import secrets
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from wxbackend.wechat.sandbox.config import SandboxConfig


class ApiError(Exception):
    """A WeChat error answer."""

    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(f"{errcode} {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg


@dataclass
class App:
    kind: str  # "oa" or "mp"
    appid: str
    secret: str


@dataclass
class Token:
    value: str
    appid: str
    expires_at: float
    issued_at: float
    revoked_at: float | None = None  # from then on: 40001 instead of 42001


@dataclass
class OaUser:
    openid: str
    following: bool = False
    subscribe_time: int = 0
    last_action: float = 0.0
    unionid: str | None = None
    subscribe_scene: str = ""
    qr_scene_str: str = ""

    def info(self) -> dict[str, Any]:
        """What /cgi-bin/user/info shows: next to nothing for non-followers."""
        if not self.following:
            return {"subscribe": 0, "openid": self.openid}
        info: dict[str, Any] = {
            "subscribe": 1, "openid": self.openid, "language": "zh_CN",
            "subscribe_time": self.subscribe_time, "remark": "", "groupid": 0,
            "tagid_list": [], "subscribe_scene": self.subscribe_scene or "ADD_SCENE_OTHERS",
            "qr_scene": 0, "qr_scene_str": self.qr_scene_str}
        if self.unionid:
            info["unionid"] = self.unionid
        return info


def _b64key() -> str:
    return base64.b64encode(secrets.token_bytes(16)).decode()


@dataclass
class MpUser:
    openid: str
    unionid: str | None = None
    session_key: str = field(default_factory=_b64key)
    grants: Counter[str] = field(default_factory=Counter)


@dataclass
class Code:
    kind: str  # "js", "oauth" or "phone"
    appid: str
    openid: str
    expires_at: float
    used: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Fault:
    errcode: int | None = None
    errmsg: str = ""
    delay_seconds: float = 0.0
    times: int = 1


def new_code() -> str:
    return secrets.token_urlsafe(24)


class World:
    """All state and cross-cutting rules of one sandbox."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.clock = time.time
        self.apps = {config.oa_appid: App("oa", config.oa_appid, config.oa_secret),
                     config.mp_appid: App("mp", config.mp_appid, config.mp_secret)}
        self.tokens: dict[str, Token] = {}
        # The current token per ("token" | "stable", appid), and when force_refresh last ran.
        self.tokens_by_kind: dict[tuple[str, str], Token] = {}
        self.last_force: dict[str, float] = {}
        self.oa_users: dict[str, OaUser] = {}
        self.mp_users: dict[str, MpUser] = {}
        self.codes: dict[str, Code] = {}
        self.outbox: list[dict[str, Any]] = []
        self.faults: dict[str, deque[Fault]] = {}
        self.calls: Counter[str] = Counter()
        self.usage: Counter[tuple[str, str, str]] = Counter()
        self.menus: dict[str, dict[str, Any]] = {}
        # ticket -> {"scene", "url", "expires_at" (None: permanent)}
        self.qrcodes: dict[str, dict[str, Any]] = {}
        # Mini-program codes issued (getwxacodeunlimit), oldest first: {"appid", "page", "scene", "url"},
        # what a phone scanning each would open.
        self.wxacodes: list[dict[str, Any]] = []
        self.msgids = itertools.count(2_000_000_000)
        self.outbox_ids = itertools.count(1)

    # --- credentials and tokens -------------------------------------------------

    def credentials(self, appid: str, secret: str, kind: str | None = None) -> App:
        app = self.apps.get(appid)
        if app is None or (kind is not None and app.kind != kind):
            raise ApiError(40013, "invalid appid")
        if not secrets.compare_digest(secret.encode(), app.secret.encode()):
            raise ApiError(40125, "invalid appsecret")
        return app

    def check_token(self, value: str) -> App:
        if not value:
            raise ApiError(41001, "access_token missing")
        token = self.tokens.get(value)
        now = self.clock()
        if token is None or (token.revoked_at is not None and now >= token.revoked_at):
            raise ApiError(40001, "invalid credential, access_token is invalid or not latest")
        if now >= token.expires_at:
            raise ApiError(42001, "access_token expired")
        return self.apps[token.appid]

    def authorize(self, value: str, kind: str, api: str) -> App:
        """The app calling ``api`` with token ``value``; checks kind and limits."""
        app = self.check_token(value)
        if app.kind != kind:
            raise ApiError(48001, "api unauthorized")
        self.count_usage(app.appid, api)
        return app

    def issue_token(self, appid: str) -> Token:
        now = self.clock()
        token = Token("SBX_" + secrets.token_urlsafe(96), appid, now + self.config.token_ttl, now)
        self.tokens[token.value] = token
        return token

    # --- limits and faults --------------------------------------------------------

    def count_usage(self, appid: str, api: str) -> None:
        """Per-appid minute limit (45011; 45009 for wxacode) and daily quota (45009)."""
        now = self.clock()
        minute_key = (appid, api, time.strftime("%Y%m%d%H%M", time.gmtime(now)))
        # Daily quotas reset at midnight Beijing time (UTC+8).
        day_key = (appid, api, time.strftime("%Y%m%d", time.gmtime(now + 8 * 3600)))
        limit = self.config.minute_limit.get(api)
        if limit is not None and self.usage[minute_key] >= limit:
            if api == "/wxa/getwxacodeunlimit":
                raise ApiError(45009, "reach max api minute quota limit")
            raise ApiError(45011, "api minute-quota reach limit  mustslower  retry next minute")
        quota = self.config.daily_quota.get(api)
        if quota is not None and self.usage[day_key] >= quota:
            raise ApiError(45009, "reach max api daily quota limit")
        self.usage[minute_key] += 1
        self.usage[day_key] += 1

    def add_fault(self, api: str, fault: Fault) -> None:
        self.faults.setdefault(api, deque()).append(fault)

    async def apply_fault(self, api: str) -> None:
        """Consume the next injected fault of ``api``: a delay, then maybe an errcode."""
        queue = self.faults.get(api)
        if not queue:
            return
        fault = queue[0]
        fault.times -= 1
        if fault.times <= 0:
            queue.popleft()
        if fault.delay_seconds:
            await asyncio.sleep(fault.delay_seconds)
        if fault.errcode is not None:
            raise ApiError(fault.errcode, fault.errmsg or "injected fault")

    # --- users and codes ----------------------------------------------------------

    def oa_user(self, openid: str) -> OaUser:
        return self.oa_users.setdefault(openid, OaUser(openid))

    def known_oa_user(self, openid: str) -> OaUser:
        user = self.oa_users.get(openid)
        if user is None:
            raise ApiError(40003, "invalid openid")
        return user

    def mp_user(self, openid: str, unionid: str | None = None) -> MpUser:
        user = self.mp_users.setdefault(openid, MpUser(openid))
        if unionid:
            user.unionid = unionid
        return user

    def issue_code(self, kind: str, appid: str, openid: str, **extra: Any) -> str:
        code = new_code()
        self.codes[code] = Code(kind, appid, openid, self.clock() + self.config.code_ttl,
                                extra=extra)
        return code

    def redeem_code(self, value: str, kind: str, appid: str, *, reuse_errcode: int = 40029) -> Code:
        """A code is good once, for its own app, before it expires."""
        code = self.codes.get(value)
        if code is None or code.kind != kind or code.appid != appid:
            raise ApiError(40029, "invalid code")
        if code.used:
            raise ApiError(reuse_errcode, "code been used" if reuse_errcode == 40163
                           else "invalid code")
        if self.clock() >= code.expires_at:
            raise ApiError(40029, "invalid code")
        code.used = True
        return code

    def live_qrcode(self, ticket: str) -> dict[str, Any] | None:
        code = self.qrcodes.get(ticket)
        if code is None or (code["expires_at"] is not None and self.clock() >= code["expires_at"]):
            return None
        return code

    def menu_keys(self, appid: str) -> set[str] | None:
        """Keys of the menu's key buttons; None when no menu was created."""
        menu = self.menus.get(appid)
        if menu is None:
            return None
        buttons = [sub for top in menu["button"] for sub in top.get("sub_button") or [top]]
        return {b["key"] for b in buttons if "key" in b}

    # --- outbox ---------------------------------------------------------------------

    def record(self, kind: str, app: App, openid: str, body: dict[str, Any],
               msgid: int | None = None) -> dict[str, Any]:
        entry = {"id": next(self.outbox_ids), "kind": kind, "appid": app.appid,
                 "openid": openid, "msgid": msgid, "time": int(self.clock()), "body": body}
        self.outbox.append(entry)
        return entry

    def new_msgid(self) -> int:
        return next(self.msgids)
