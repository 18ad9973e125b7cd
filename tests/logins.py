"""Helpers for login and account tests: parallel browsers, reason codes, sessions.

    responses = await burst(server_url, [("city", "wrong")] * 39 + [("city", ADMIN_PASSWORD)])
    code_of(responses[0])          # "login_failed", from the page's data-code
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import httpx

from tests.webclient import WebClient

_CODE = re.compile(r'data-code="([a-z_]+)"')


def code_of(response: httpx.Response) -> str | None:
    """The reason code an HTML error page or form carries."""
    found = _CODE.search(response.text)
    return found.group(1) if found else None


def issued_session(response: httpx.Response) -> bool:
    return any(h.startswith("wxb_session=") and "Max-Age=0" not in h
               for h in response.headers.get_list("set-cookie"))


@contextlib.asynccontextmanager
async def browsers(server_url: str, n: int) -> AsyncIterator[list[WebClient]]:
    """``n`` independent browsers, each holding its own XSRF cookie already."""
    clients = [WebClient(server_url) for _ in range(n)]
    try:
        await asyncio.gather(*(c.xsrf() for c in clients))
        yield clients
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def burst(server_url: str, attempts: list[tuple[str, str]]) -> list[httpx.Response]:
    """All ``attempts`` (username, password) posted to the login form at once."""
    async with browsers(server_url, len(attempts)) as clients:
        return list(await asyncio.gather(*(
            c.post_form("/admin/login", {"username": u, "password": p})
            for c, (u, p) in zip(clients, attempts, strict=True))))


async def session_count(redis) -> int:
    return len(await redis.keys("session:*"))
