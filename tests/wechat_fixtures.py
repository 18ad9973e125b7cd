"""Fixtures for WeChat work: the sandbox on a free port, and settings pointing at it.

``sandbox`` gives every test its own sandbox (fresh state) listening in the
test's event loop, and points ``settings.wechat`` (api_base, oauth_base,
qrcode_image_base and test credentials) at it, so ``oa_client(ctx)`` and
``mp_client(ctx)`` talk to it over real HTTP::

    async def test_x(ctx, sandbox):
        await sandbox.follow("oUser1")
        await oa_client(ctx).send_custom_text("oUser1", "你好")
        assert (await sandbox.outbox(openid="oUser1"))[0]["kind"] == "custom"

Tests change WeChat's limits on the fly through ``sandbox.config`` (read on
every call): ``sandbox.config.daily_quota[api] = 2``, ``token_ttl = 1``.
Set ``sandbox.config.callback_url`` to have the simulated users call a server.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from wxbackend.embedded import free_port
from wxbackend.settings import Settings
from wxbackend.wechat.sandbox import SandboxApp, SandboxConfig, make_sandbox_app
from wxbackend.wechat.sandbox.world import World


@dataclass
class Sandbox:
    url: str
    app: SandboxApp
    http: httpx.AsyncClient  # base_url = url

    @property
    def config(self) -> SandboxConfig:
        return self.app.config

    @property
    def world(self) -> World:
        return self.app.world

    def calls(self, api: str) -> int:
        """How often WeChat API ``api`` was called (as /sandbox/stats counts)."""
        return self.world.calls[api]

    async def fault(self, api: str, **fault: Any) -> None:
        answer = await self.http.post("/sandbox/faults", json={"api": api, **fault})
        assert answer.status_code == 201, answer.text

    async def follow(self, openid: str, **extra: Any) -> None:
        """A follower the server has not heard of yet (no callback)."""
        answer = await self.http.post(f"/sandbox/users/{openid}",
                                      json={"following": True, **extra})
        assert answer.status_code == 200, answer.text

    async def outbox(self, **filters: str) -> list[dict[str, Any]]:
        answer = await self.http.get("/sandbox/outbox", params=filters)
        return answer.json()["messages"]

    async def login_code(self, openid: str, **extra: Any) -> str:
        answer = await self.http.post(f"/sandbox/mp/users/{openid}/login-code", json=extra)
        assert answer.status_code == 201, answer.text
        return answer.json()["code"]


def use_test_credentials(settings: Settings) -> None:
    wechat = settings.wechat
    wechat.oa_appid = "wxoa" + secrets.token_hex(6)
    wechat.oa_secret = secrets.token_hex(16)
    wechat.oa_token = secrets.token_hex(8)
    wechat.oa_aes_key = base64.b64encode(secrets.token_bytes(32)).decode()[:43]
    wechat.mp_appid = "wxmp" + secrets.token_hex(6)
    wechat.mp_secret = secrets.token_hex(16)


@pytest.fixture
async def sandbox(settings: Settings) -> AsyncIterator[Sandbox]:
    use_test_credentials(settings)
    app = make_sandbox_app(SandboxConfig.from_settings(settings, mode="safe"))
    port = free_port()
    server = app.listen(port, "127.0.0.1")
    url = f"http://127.0.0.1:{port}"
    wechat = settings.wechat
    wechat.api_base = wechat.oauth_base = wechat.qrcode_image_base = url
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            yield Sandbox(url, app, http)
    finally:
        server.stop()
        await server.close_all_connections()
