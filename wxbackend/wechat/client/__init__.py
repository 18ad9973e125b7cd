"""Async clients of WeChat's server APIs, one per app, built from the context.

::

    from wxbackend.wechat.client import oa_client, mp_client

    await oa_client(ctx).send_custom_text(openid, "绑定成功")
    session = await mp_client(ctx).code2session(js_code)

``oa_client(ctx)`` / ``mp_client(ctx)`` read ``ctx.settings.wechat``
(appid, secret, api_base, oauth_base, timeouts) when first called and keep
the client as the context's state (``ctx.state``); both share one ``httpx.AsyncClient`` per
context, closed by ``ctx.close()``. The access token is shared through
Redis (``wx:token:<appid>``), so every process of the deployment uses one.
"""

from __future__ import annotations

from typing import Any

import httpx

from wxbackend.context import AppContext
from wxbackend.wechat.client.base import BaseClient
from wxbackend.wechat.client.menu import MenuMixin
from wxbackend.wechat.client.message import (
    CustomMessageMixin,
    SubscribeMessageMixin,
    TemplateMessageMixin,
)
from wxbackend.wechat.client.oauth import OAuthMixin
from wxbackend.wechat.client.qrcode import QrCodeMixin, WxaCodeMixin
from wxbackend.wechat.client.user import UserMixin
from wxbackend.wechat.client.wxa import WxaAuthMixin

__all__ = ["MiniProgramClient", "OfficialAccountClient", "mp_client", "oa_client"]


class OfficialAccountClient(CustomMessageMixin, TemplateMessageMixin, QrCodeMixin, UserMixin,
                            MenuMixin, OAuthMixin, BaseClient):
    """The official account (公众号)."""

    def __init__(self, *, oauth_base: str, qrcode_base: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.oauth_base = oauth_base
        self.qrcode_base = qrcode_base


class MiniProgramClient(WxaAuthMixin, SubscribeMessageMixin, WxaCodeMixin, BaseClient):
    """The mini-program (小程序)."""


def _http(ctx: AppContext) -> httpx.AsyncClient:
    def opened() -> httpx.AsyncClient:
        http = httpx.AsyncClient(timeout=ctx.settings.wechat.api_timeout_seconds, follow_redirects=False)
        ctx.on_close.append(http.aclose)
        return http
    return ctx.state(httpx.AsyncClient, opened)


def _common(ctx: AppContext) -> dict[str, Any]:
    wechat = ctx.settings.wechat
    return {"api_base": wechat.api_base, "http": _http(ctx), "redis": ctx.redis,
            "timeout": wechat.api_timeout_seconds, "retries": wechat.api_retries,
            "token_margin": wechat.token_refresh_margin_seconds}


def oa_client(ctx: AppContext) -> OfficialAccountClient:
    """The official-account client of this context (created once)."""
    wechat = ctx.settings.wechat
    return ctx.state(OfficialAccountClient, lambda: OfficialAccountClient(
        appid=wechat.oa_appid, secret=wechat.oa_secret, oauth_base=wechat.oauth_base,
        qrcode_base=wechat.qrcode_image_base, **_common(ctx)))


def mp_client(ctx: AppContext) -> MiniProgramClient:
    """The mini-program client of this context (created once)."""
    wechat = ctx.settings.wechat
    return ctx.state(MiniProgramClient, lambda: MiniProgramClient(
        appid=wechat.mp_appid, secret=wechat.mp_secret, **_common(ctx)))
