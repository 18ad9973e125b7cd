"""From an inbound official-account message or event to the function that answers it.

One table says who answers what: keywords, menu keys, event types, message
types and QR-scene prefixes. Capabilities declare their entries
(:class:`~wxbackend.capability.ChatRoute`), and the registry builds the one
router of a process from them (:func:`router_of`)::

    async def dues(ctx, msg):
        return Text("本月党费 ...")

    CHAT = (ChatRoute.keyword("党费", dues, help="查看本月党费"),
            ChatRoute.scene_prefix("checkin:", on_scan))   # subscribe with qrscene_checkin:... or SCAN

    reply = await router_of(ctx).dispatch(ctx, inbound)   # Reply | None (None: answer "success")

Handlers see :class:`Inbound` (plain fields, no wechatpy classes) and return
a :class:`Reply`; rendering to WeChat XML happens here, nowhere else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from wechatpy import replies as wx_replies

log = logging.getLogger("wxbackend.wechat.router")

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

    def __init__(self, routes: Iterable[Any] = ()) -> None:
        self.keywords: dict[str, Handler] = {}
        self.menu_keys: dict[str, Handler] = {}
        self.events: dict[str, Handler] = {}
        self.message_types: dict[str, Handler] = {}
        self.scenes: list[tuple[str, Handler]] = []
        self.text_fallback: Handler | None = None
        self.menu_fallback: Handler | None = None
        for route in routes:
            self.add(route.table, route.key, route.handler)

    def add(self, table: str, key: str, handler: Handler) -> None:
        """One entry (a ``ChatRoute``'s fields); a key answered twice is refused."""
        if table in ("fallback_text", "fallback_menu"):
            attribute = "text_fallback" if table == "fallback_text" else "menu_fallback"
            if getattr(self, attribute) not in (None, handler):
                raise ValueError(f"{table} is already handled by {getattr(self, attribute).__qualname__}")
            setattr(self, attribute, handler)
        elif table == "scene_prefix":
            for known, _ in self.scenes:
                if known.startswith(key) or key.startswith(known):
                    raise ValueError(f"scene prefix {key!r} overlaps {known!r}")
            self.scenes.append((key, handler))
        else:
            found = {"keyword": self.keywords, "menu_key": self.menu_keys, "event": self.events,
                     "message_type": self.message_types}[table]
            key = key.strip() if table == "keyword" else key.lower() if table != "menu_key" else key
            if key in found and found[key] is not handler:
                raise ValueError(f"{table} {key!r} is already handled by {found[key].__qualname__}")
            found[key] = handler

    # -- dispatch -------------------------------------------------------------

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


def router_of(ctx: Any) -> Router:
    """The router of the context's installed capabilities (built on first use)."""
    return ctx.state(Router, lambda: Router(ctx.registry.chat))
