"""Official-account APIs: messages, parametric QR codes, follower info, menu.

Rules kept as WeChat keeps them: a customer-service message needs a follower
who acted within 48 h (45015), a template message a follower (43004), an
unknown openid is 40003; QR codes and menus are checked for WeChat's sizes.
"""

from __future__ import annotations

import io
import secrets
from typing import Any

import qrcode
import qrcode.image.pure

from wxbackend.wechat.sandbox.base import ApiHandler
from wxbackend.wechat.sandbox.world import ApiError

MAX_QR_EXPIRE_SECONDS = 2_592_000
CUSTOM_MSGTYPES = ("text", "image", "voice", "video", "music", "news", "mpnews",
                   "msgmenu", "wxcard", "miniprogrampage")


def png(data: str) -> bytes:
    """A real PNG QR code of ``data``."""
    out = io.BytesIO()
    qrcode.make(data, image_factory=qrcode.image.pure.PyPNGImage).save(out)
    return out.getvalue()


class CustomSendHandler(ApiHandler):
    app_kind = "oa"

    def post(self) -> None:
        body = self.json_body()
        user = self.world.known_oa_user(str(body.get("touser", "")))
        msgtype = body.get("msgtype")
        if msgtype not in CUSTOM_MSGTYPES or not isinstance(body.get(msgtype), dict):
            raise ApiError(40008, "invalid message type")
        if msgtype == "text" and not body["text"].get("content"):
            raise ApiError(44004, "empty content")
        window = self.world.config.custom_window_seconds
        if not user.following or self.world.clock() - user.last_action > window:
            raise ApiError(45015, "response out of time limit or subscription is canceled")
        self.world.record("custom", self.app, user.openid, body)
        self.ok()


class TemplateSendHandler(ApiHandler):
    app_kind = "oa"

    def post(self) -> None:
        body = self.json_body()
        user = self.world.known_oa_user(str(body.get("touser", "")))
        if not body.get("template_id"):
            raise ApiError(40037, "invalid template_id")
        if not isinstance(body.get("data"), dict):
            raise ApiError(47001, "data format error")
        if not user.following:
            raise ApiError(43004, "require subscribe")
        msgid = self.world.new_msgid()
        self.world.record("template", self.app, user.openid, body, msgid)
        self.ok(msgid=msgid)


class QrCreateHandler(ApiHandler):
    app_kind = "oa"

    def post(self) -> None:
        body = self.json_body()
        action = body.get("action_name")
        scene = (body.get("action_info") or {}).get("scene") or {}
        scene_value = _scene(action, scene)
        permanent = action in ("QR_LIMIT_SCENE", "QR_LIMIT_STR_SCENE")
        expire = None
        if not permanent:
            expire = body.get("expire_seconds", 60)  # WeChat's default for temporary codes
            if not isinstance(expire, int) or not 1 <= expire <= MAX_QR_EXPIRE_SECONDS:
                raise ApiError(40097, "invalid args: expire_seconds")
        ticket = secrets.token_urlsafe(48)
        url = f"http://weixin.qq.com/q/{secrets.token_urlsafe(18)}"
        expires_at = None if expire is None else self.world.clock() + expire
        self.world.qrcodes[ticket] = {"scene": scene_value, "url": url, "expires_at": expires_at}
        answer: dict[str, Any] = {"ticket": ticket, "url": url}
        if expire is not None:
            answer["expire_seconds"] = expire
        self.write_json(answer)


def _scene(action: Any, scene: dict[str, Any]) -> str:
    if action in ("QR_STR_SCENE", "QR_LIMIT_STR_SCENE"):
        value = scene.get("scene_str")
        if not isinstance(value, str) or not 1 <= len(value) <= 64:
            raise ApiError(40097, "invalid args: scene_str")
        return value
    if action in ("QR_SCENE", "QR_LIMIT_SCENE"):
        value = scene.get("scene_id")
        top = 100_000 if action == "QR_LIMIT_SCENE" else 2**32 - 1
        if not isinstance(value, int) or not 1 <= value <= top:
            raise ApiError(40097, "invalid args: scene_id")
        return str(value)
    raise ApiError(40097, "invalid args: action_name")


class ShowQrHandler(ApiHandler):
    """mp.weixin.qq.com/cgi-bin/showqrcode: the image of a live ticket, else 404."""

    def get(self) -> None:
        code = self.world.live_qrcode(self.get_query_argument("ticket", ""))
        if code is None:
            self.send_error(404)
            return
        self.set_header("Content-Type", "image/png")
        self.finish(png(code["url"]))


class UserInfoHandler(ApiHandler):
    app_kind = "oa"

    def get(self) -> None:
        user = self.world.known_oa_user(self.get_query_argument("openid", ""))
        self.write_json(user.info())


class MenuCreateHandler(ApiHandler):
    app_kind = "oa"

    def post(self) -> None:
        body = self.json_body()
        check_menu(body)
        self.world.menus[self.app.appid] = body
        self.ok()


class MenuGetHandler(ApiHandler):
    app_kind = "oa"

    def get(self) -> None:
        menu = self.world.menus.get(self.app.appid)
        if menu is None:
            raise ApiError(46003, "menu no exist")
        self.write_json({"menu": menu})


BUTTON_TYPES = ("click", "view", "miniprogram", "scancode_push", "scancode_waitmsg",
                "pic_sysphoto", "pic_photo_or_album", "pic_weixin", "location_select",
                "media_id", "article_id", "article_view_limited", "view_limited")


def check_menu(menu: dict[str, Any]) -> None:
    """WeChat's menu rules: 1-3 buttons of at most 5 sub-buttons, byte-sized names."""
    buttons = menu.get("button")
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
        raise ApiError(40016, "invalid button size")
    for button in buttons:
        _check_button(button, top=True)
        subs = button.get("sub_button")
        if subs:
            if not isinstance(subs, list) or len(subs) > 5:
                raise ApiError(40023, "invalid sub button size")
            for sub in subs:
                _check_button(sub, top=False)


def _check_button(button: Any, *, top: bool) -> None:
    # Top-level codes are 40017-40020; the same faults in sub-buttons are 40024-40027.
    offset = 0 if top else 7
    if not isinstance(button, dict):
        raise ApiError(40017 + offset, "invalid button type")
    name = button.get("name")
    if not isinstance(name, str) or not 1 <= len(name.encode()) <= (16 if top else 60):
        raise ApiError(40018 + offset, "invalid button name size")
    if top and button.get("sub_button"):
        return
    kind = button.get("type")
    if kind not in BUTTON_TYPES:
        raise ApiError(40017 + offset, "invalid button type")
    if kind in ("view", "miniprogram"):
        url = button.get("url")
        if not isinstance(url, str) or not 1 <= len(url.encode()) <= 1024:
            raise ApiError(40020 + offset, "invalid button url size")
    elif kind not in ("media_id", "article_id", "article_view_limited", "view_limited"):
        key = button.get("key")
        if not isinstance(key, str) or not 1 <= len(key.encode()) <= 128:
            raise ApiError(40019 + offset, "invalid button key size")
