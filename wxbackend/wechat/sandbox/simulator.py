"""The sandbox as a WeChat user: ``POST /sandbox/users/{openid}/<action>``.

Each action changes what WeChat knows about the user (following or not,
last action for the 48 h customer-service window), pushes the message or
event to our callback as WeChat would, and answers with what came back::

    curl -X POST localhost:9100/sandbox/users/oUser1/subscribe
    curl -X POST localhost:9100/sandbox/users/oUser1/say -d '{"content": "绑定"}'
    curl -X POST localhost:9100/sandbox/users/oUser1/scan -d '{"scene": "bind:5f1c"}'
    curl -X POST localhost:9100/sandbox/users/oUser1/scan -d '{"url": "http://weixin.qq.com/q/..."}'
    curl -X POST localhost:9100/sandbox/users/oUser1/click -d '{"key": "HELP"}'
    -> {"status": 200, "body": "<xml>...", "reply": {"MsgType": "text", "Content": ...},
        "error": null, "attempts": 1, "message": {...what WeChat sent...}}

A reply WeChat accepts is what the user sees in the chat: it goes to the outbox too
(kind ``reply``), beside the messages our server sent through the APIs.

A QR scan by a user who does not follow yet is a ``subscribe`` event with
EventKey ``qrscene_<scene>``; by a follower a ``SCAN`` event with the bare
scene. Once a menu was created, only its keys can be clicked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wxbackend.wechat.sandbox.base import ControlError, ControlHandler
from wxbackend.wechat.sandbox.push import Pusher
from wxbackend.wechat.sandbox.world import OaUser, World

Fields = dict[str, Any]


def _follow(world: World, user: OaUser, scene: str = "", how: str = "ADD_SCENE_SEARCH") -> None:
    user.following = True
    user.subscribe_time = int(world.clock())
    user.subscribe_scene = how
    user.qr_scene_str = scene


def _must_follow(user: OaUser) -> None:
    if not user.following:
        raise ControlError(409, f"{user.openid} does not follow the account")


def say(handler: UserActionHandler, user: OaUser, body: dict[str, Any]) -> Fields:
    content = handler.require(body, "content")
    _must_follow(user)
    return {"MsgType": "text", "Content": content, "MsgId": handler.world.new_msgid()}


def subscribe(handler: UserActionHandler, user: OaUser, body: dict[str, Any]) -> Fields:
    if user.following:
        raise ControlError(409, f"{user.openid} already follows the account")
    _follow(handler.world, user)
    return {"MsgType": "event", "Event": "subscribe"}


def unsubscribe(handler: UserActionHandler, user: OaUser, body: dict[str, Any]) -> Fields:
    _must_follow(user)
    user.following = False
    return {"MsgType": "event", "Event": "unsubscribe"}


def scan(handler: UserActionHandler, user: OaUser, body: dict[str, Any]) -> Fields:
    """Scan by ``ticket`` or ``url`` (a code created through the API) or by bare ``scene``.

    ``url`` is what a camera reads from a printed code (``http://weixin.qq.com/q/...``).
    """
    world = handler.world
    ticket = body.get("ticket")
    if not ticket and body.get("url"):
        ticket = next((t for t, c in world.qrcodes.items() if c["url"] == body["url"]), None)
        if ticket is None:
            raise ControlError(410, "QR code unknown or expired (WeChat shows the user an error)")
    if ticket:
        code = world.live_qrcode(str(ticket))
        if code is None:
            raise ControlError(410, "QR code unknown or expired (WeChat shows the user an error)")
        scene = code["scene"]
    else:
        scene = handler.require(body, "scene")
        ticket = next((t for t, c in reversed(world.qrcodes.items())
                       if c["scene"] == scene and world.live_qrcode(t)), None)
    if user.following:
        fields: Fields = {"MsgType": "event", "Event": "SCAN", "EventKey": scene}
    else:
        _follow(world, user, scene, "ADD_SCENE_QR_CODE")
        fields = {"MsgType": "event", "Event": "subscribe", "EventKey": f"qrscene_{scene}"}
    if ticket:
        fields["Ticket"] = ticket
    return fields


def click(handler: UserActionHandler, user: OaUser, body: dict[str, Any]) -> Fields:
    key = handler.require(body, "key")
    _must_follow(user)
    keys = handler.world.menu_keys(handler.world.config.oa_appid)
    if keys is not None and key not in keys:
        raise ControlError(400, f"the current menu has no button with key {key!r}")
    return {"MsgType": "event", "Event": "CLICK", "EventKey": key}


def view(handler: UserActionHandler, user: OaUser, body: dict[str, Any]) -> Fields:
    url = handler.require(body, "url")
    _must_follow(user)
    return {"MsgType": "event", "Event": "VIEW", "EventKey": url}


ACTIONS: dict[str, Callable[[UserActionHandler, OaUser, dict[str, Any]], Fields]] = {
    "say": say, "subscribe": subscribe, "unsubscribe": unsubscribe, "scan": scan,
    "click": click, "view": view,
}


class UserActionHandler(ControlHandler):
    def initialize(self, world: World, pusher: Pusher) -> None:  # type: ignore[override]
        super().initialize(world)
        self.pusher = pusher

    async def post(self, openid: str, action: str) -> None:
        if not self.world.config.callback_url:
            raise ControlError(409, "the sandbox has no callback_url to call")
        body = self.json_body()
        user = self.world.oa_user(openid)
        fields = ACTIONS[action](self, user, body)
        user.last_action = self.world.clock()
        result = await self.pusher.push(user.openid, fields)
        if result.reply is not None and result.error is None \
                and result.reply.get("MsgType") != "transfer_customer_service":
            # The passive reply in the callback's answer: what the user saw.
            app = self.world.apps[self.world.config.oa_appid]
            self.world.record("reply", app, user.openid, result.reply)
        self.write_json(result.as_json())


class VerifyHandler(ControlHandler):
    """``POST /sandbox/verify``: the URL check WeChat runs when the address is saved."""

    def initialize(self, world: World, pusher: Pusher) -> None:  # type: ignore[override]
        super().initialize(world)
        self.pusher = pusher

    async def post(self) -> None:
        if not self.world.config.callback_url:
            raise ControlError(409, "the sandbox has no callback_url to call")
        self.write_json(await self.pusher.verify_url())
