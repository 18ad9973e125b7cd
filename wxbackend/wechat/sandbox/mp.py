"""Mini-program APIs: code2session, subscribe messages, wxacode, phone number.

Login and phone codes come from the control API (``POST
/sandbox/mp/users/{openid}/login-code`` / ``phone-code``) and are good once
for ``code_ttl`` seconds; a subscribe message spends one grant given by
``POST /sandbox/mp/users/{openid}/grant-subscribe`` (else 43101).
"""

from __future__ import annotations

import re
from urllib.parse import quote

from wxbackend.wechat.sandbox.base import ApiHandler
from wxbackend.wechat.sandbox.oa import png
from wxbackend.wechat.sandbox.world import ApiError

# WeChat's rule, written here again on purpose: the sandbox checks our client, so it
# must not share the client's code.
WXACODE_SCENE = re.compile(r"[0-9A-Za-z!#$&'()*+,/:;=?@\-._~]{1,32}")


class Code2SessionHandler(ApiHandler):
    def get(self) -> None:
        app = self.world.credentials(self.get_query_argument("appid", ""),
                                     self.get_query_argument("secret", ""), kind="mp")
        if self.get_query_argument("grant_type", "") != "authorization_code":
            raise ApiError(40002, "invalid grant_type")
        js_code = self.get_query_argument("js_code", "")
        if not js_code:
            raise ApiError(41008, "missing code")
        self.world.count_usage(app.appid, self.request.path)
        code = self.world.redeem_code(js_code, "js", app.appid)
        user = self.world.mp_user(code.openid)
        answer = {"session_key": user.session_key, "openid": user.openid}
        if user.unionid:
            answer["unionid"] = user.unionid
        self.write_json(answer)  # like WeChat, a success carries no errcode


class SubscribeSendHandler(ApiHandler):
    app_kind = "mp"

    def post(self) -> None:
        body = self.json_body()
        openid = str(body.get("touser", ""))
        user = self.world.mp_users.get(openid)
        if user is None:
            raise ApiError(40003, "invalid openid")
        template_id = body.get("template_id")
        if not template_id or not isinstance(template_id, str):
            raise ApiError(40037, "invalid template_id")
        data = body.get("data")
        if not isinstance(data, dict) or not data:
            raise ApiError(47003, "argument invalid! data is empty")
        for name, item in data.items():
            if not isinstance(item, dict) or not str(item.get("value", "")).strip():
                raise ApiError(47003, f"argument invalid! data.{name}.value is empty")
        if user.grants[template_id] <= 0:
            raise ApiError(43101, "user refuse to accept the msg")
        user.grants[template_id] -= 1
        self.world.record("subscribe", self.app, openid, body)
        self.ok()


class WxaCodeHandler(ApiHandler):
    app_kind = "mp"

    def post(self) -> None:
        body = self.json_body()
        scene = body.get("scene")
        if not isinstance(scene, str) or not WXACODE_SCENE.fullmatch(scene):
            raise ApiError(40169, "invalid length for scene, or the data is not json string")
        page = body.get("page", "")
        if not isinstance(page, str) or page.startswith("/") or "?" in page:
            raise ApiError(41030, "invalid page rid")
        width = body.get("width", 430)
        if not isinstance(width, int):
            raise ApiError(40097, "invalid args: width")
        # The code a phone would scan: opens `page` with ?scene=<scene>. Kept, so that a
        # test or a demo can play the phone that scans it (GET /sandbox/mp/codes).
        data = f"https://sandbox.wxacode/{self.app.appid}/{page}?scene={quote(scene, safe='')}"
        self.world.wxacodes.append({"appid": self.app.appid, "page": page, "scene": scene, "url": data})
        self.set_header("Content-Type", "image/png")
        self.finish(png(data))


class PhoneNumberHandler(ApiHandler):
    app_kind = "mp"

    def post(self) -> None:
        body = self.json_body()
        code = self.world.redeem_code(str(body.get("code", "")), "phone", self.app.appid)
        phone, country = code.extra["phone"], code.extra["country_code"]
        self.ok(phone_info={
            "phoneNumber": phone if country == "86" else f"+{country}{phone}",
            "purePhoneNumber": phone, "countryCode": country,
            "watermark": {"timestamp": int(self.world.clock()), "appid": self.app.appid}})
