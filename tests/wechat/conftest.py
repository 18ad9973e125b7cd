"""Fixtures of the official-account tests: a known account and our server on a known port.

The ``settings`` fixture overrides the suite's: the account :data:`OA` of
``tests/wechat/helpers.py``, and a public URL that names the port the server
will listen on (links in replies and the OAuth redirect use it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import make_settings
from tests.wechat.helpers import OA, account_env
from wxbackend.app import make_app
from wxbackend.context import AppContext
from wxbackend.embedded import EmbeddedServers, free_port
from wxbackend.settings import Settings
from wxbackend.wechat import background


@pytest.fixture
def oa_port() -> int:
    return free_port()


@pytest.fixture
def settings(servers: EmbeddedServers, tmp_path: Path, oa_port: int) -> Settings:
    return make_settings(servers, tmp_path, **account_env(
        OA, WXB_HTTP_PUBLIC_URL=f"http://127.0.0.1:{oa_port}"))


@pytest.fixture
async def oa_url(ctx: AppContext, oa_port: int) -> AsyncIterator[str]:
    server = make_app(ctx).listen(oa_port, "127.0.0.1", max_body_size=ctx.settings.http.max_body_bytes)
    try:
        yield f"http://127.0.0.1:{oa_port}"
    finally:
        await background.drain(ctx)
        server.stop()
        await server.close_all_connections()
