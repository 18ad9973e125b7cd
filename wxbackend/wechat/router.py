"""From an inbound official-account message or event to the function that answers it.

One table says who answers what: keywords, menu keys, event types, message
types and QR-scene prefixes. Capability modules register into the
module-level :data:`router` when they are imported, and list themselves in
:data:`CHAT_MODULES` so that the callback imports them before the first
dispatch::

    from wxbackend.wechat.router import Text, router

    @router.keyword("党费")
    async def dues(ctx, msg):
        return Text("本月党费 ...")

    @router.scene_prefix("checkin:")
    async def checkin(ctx, msg):          # subscribe with qrscene_checkin:... or SCAN
        return Text(f"签到成功：{msg.scene}")

    reply = await router.dispatch(ctx, inbound)   # Reply | None (None: answer "success")

Handlers see :class:`Inbound` (plain fields, no wechatpy classes) and return
a :class:`Reply`; rendering to WeChat XML happens here, nowhere else.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from wechatpy import replies as wx_replies

log = logging.getLogger("wxbackend.wechat.router")

# Modules whose import registers chat handlers; a capability adds its module here.
CHAT_MODULES = [
    "wxbackend.services.chat",
]

# WeChat sends some event names in upper case (SCAN, CLICK, VIEW, LOCATION);
# the table stores them lower-cased so registrations need not care.


@dataclass(frozen=True)
class Inbound:
    """A decrypted, parsed message or event, as handlers see it.

    ``scene`` is the QR scene of ``subscribe`` (EventKey ``qrscene_<scene>``)
    and ``SCAN`` events, else None; ``key`` is the raw EventKey.
    """

    openid: str
    account: str  # ToUserName: our official account's original id (gh_...)
    msg_type: str  # lower case: text, image, event, ...
    create_time: int
    event: str = ""  # lower case: subscribe, unsubscribe, scan, click, view, location
    key: str = ""
    content: str = ""
    msg_id: int | None = None
    scene: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


class Reply:
    """What we answer; subclasses render WeChat's passive-reply XML."""

    def render(self, msg: Inbound) -> str:
        raise NotImplementedError

    def as_text(self) -> str:
        """Plain text for a customer-service message when the reply was late."""
        raise NotImplementedError


def _cdata_safe(text: str) -> str:
    # wechatpy puts values in CDATA without escaping; "]]>" would end it early.
    return text.replace("]]>", "]]]]><![CDATA[>")


@dataclass(frozen=True)
class Text(Reply):
    content: str

    def render(self, msg: Inbound) -> str:
        # wechatpy's TextReply.render, written out: its field machinery cost
        # 15 µs on every chat answer, more than decrypting the message.
        return ("<xml>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA["
                + _cdata_safe(self.content) + "]]></Content>\n<FromUserName><![CDATA["
                + _cdata_safe(msg.account) + "]]></FromUserName>\n<ToUserName><![CDATA["
                + _cdata_safe(msg.openid) + "]]></ToUserName>\n<CreateTime>"
                + str(int(time.time())) + "</CreateTime>\n</xml>")

    def as_text(self) -> str:
        return self.content

    def joined(self, other: Text) -> Text:
        return Text(f"{self.content}\n\n{other.content}")


@dataclass(frozen=True)
class Article:
    title: str
    description: str
    url: str
    image: str = ""


@dataclass(frozen=True)
class News(Reply):
    """A news (图文) reply: up to 8 articles (WeChat shows only the first since 2018)."""

    articles: tuple[Article, ...]

    def render(self, msg: Inbound) -> str:
        articles = [{"title": _cdata_safe(a.title), "description": _cdata_safe(a.description),
                     "url": _cdata_safe(a.url), "image": _cdata_safe(a.image)}
                    for a in self.articles[:8]]
        return wx_replies.ArticlesReply(source=msg.account, target=msg.openid,
                                        time=int(time.time()), articles=articles).render()

    def as_text(self) -> str:
        return "\n".join(f"{a.title}：{a.url}" for a in self.articles)


Handler = Callable[[Any, Inbound], Awaitable[Reply | None]]


class Router:
    """The one table from keywords, menu keys, events and scenes to handlers."""

    def __init__(self, modules: list[str] | None = None) -> None:
        self.keywords: dict[str, Handler] = {}
        self.menu_keys: dict[str, Handler] = {}
        self.events: dict[str, Handler] = {}
        self.message_types: dict[str, Handler] = {}
        self.scenes: list[tuple[str, Handler]] = []
        self.text_fallback: Handler | None = None
        self.menu_fallback: Handler | None = None
        self.modules = modules if modules is not None else CHAT_MODULES
        self._loaded = False

    # -- registration (decorators) ------------------------------------------

    def _register(self, table: dict[str, Handler], key: str, what: str) -> Callable[[Handler], Handler]:
        def decorate(fn: Handler) -> Handler:
            if key in table and table[key] is not fn:
                raise ValueError(f"{what} {key!r} is already handled by {table[key].__qualname__}")
            table[key] = fn
            return fn
        return decorate

    def keyword(self, word: str) -> Callable[[Handler], Handler]:
        """Text messages equal to ``word`` (after trimming spaces)."""
        return self._register(self.keywords, word.strip(), "keyword")

    def menu_key(self, key: str) -> Callable[[Handler], Handler]:
        """CLICK events of the menu button with this key."""
        return self._register(self.menu_keys, key, "menu key")

    def event(self, name: str) -> Callable[[Handler], Handler]:
        """Events by type: subscribe, unsubscribe, scan, location, view, ..."""
        return self._register(self.events, name.lower(), "event")

    def message_type(self, name: str) -> Callable[[Handler], Handler]:
        """Non-text messages by MsgType: image, voice, video, location, link, ..."""
        return self._register(self.message_types, name.lower(), "message type")

    def scene_prefix(self, prefix: str) -> Callable[[Handler], Handler]:
        """QR scenes starting with ``prefix`` (subscribe via QR code, and SCAN)."""
        def decorate(fn: Handler) -> Handler:
            for known, _ in self.scenes:
                if known.startswith(prefix) or prefix.startswith(known):
                    raise ValueError(f"scene prefix {prefix!r} overlaps {known!r}")
            self.scenes.append((prefix, fn))
            return fn
        return decorate

    def fallback_text(self, fn: Handler) -> Handler:
        """Text that no keyword matches (the help text: never silence)."""
        self.text_fallback = fn
        return fn

    def fallback_menu(self, fn: Handler) -> Handler:
        """A CLICK whose key nobody registered (e.g. a menu newer than the server)."""
        self.menu_fallback = fn
        return fn

    # -- dispatch -------------------------------------------------------------

    def load(self) -> None:
        """Import the capability modules (once), which registers their handlers."""
        if not self._loaded:
            for name in self.modules:
                importlib.import_module(name)
            self._loaded = True

    def scene_handler(self, scene: str | None) -> Handler | None:
        if not scene:
            return None
        for prefix, fn in self.scenes:
            if scene.startswith(prefix):
                return fn
        return None

    def handler_for(self, msg: Inbound) -> Handler | None:
        """The handler of a message, or None when nobody answers it."""
        if msg.msg_type == "text":
            return self.keywords.get(msg.content.strip()) or self.text_fallback
        if msg.msg_type != "event":
            return self.message_types.get(msg.msg_type)
        if msg.event == "click":
            return self.menu_keys.get(msg.key) or self.menu_fallback
        if msg.event == "scan":
            return self.scene_handler(msg.scene) or self.events.get("scan")
        return self.events.get(msg.event)

    def is_known(self, msg: Inbound) -> bool:
        return self.handler_for(msg) is not None or self.scene_handler(msg.scene) is not None

    async def dispatch(self, ctx: Any, msg: Inbound) -> Reply | None:
        """Run the handler(s) of ``msg``; None means "answer success"."""
        self.load()
        if msg.msg_type == "event" and msg.event == "subscribe" and msg.scene:
            return await self._subscribe_with_scene(ctx, msg)
        handler = self.handler_for(msg)
        if handler is None:
            log.info("no handler", extra={"fields": {"msg_type": msg.msg_type, "event": msg.event}})
            return None
        return await handler(ctx, msg)

    async def _subscribe_with_scene(self, ctx: Any, msg: Inbound) -> Reply | None:
        # A new follower who scanned a parametric QR code: the follow is
        # recorded (subscribe handler) and the scene's capability answers too.
        welcome = await self.events["subscribe"](ctx, msg) if "subscribe" in self.events else None
        scene = self.scene_handler(msg.scene)
        answer = await scene(ctx, msg) if scene else None
        if isinstance(welcome, Text) and isinstance(answer, Text):
            return answer.joined(welcome)
        return answer or welcome


router = Router()
