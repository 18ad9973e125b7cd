"""The tiny base of the async WeChat API client: ``_get`` and ``_post``.

As wechatpy's ``BaseWeChatClient``, but on ``httpx.AsyncClient`` (wechatpy's
``requests`` client would block Tornado's event loop). Each call:

- appends the app's shared access token (``token=False`` for the APIs that
  take appid + secret instead);
- decodes the JSON answer (a missing errcode counts as 0) and raises
  :func:`~wxbackend.wechat.errors.error_for` for errcode != 0;
- retries network errors, 5xx answers and errcode -1 up to ``retries`` times
  with exponential backoff;
- on 40001/42001 refreshes the token once and retries the call once.

API families are mixins on top (``message.py``, ``qrcode.py`` ...)::

    class MenuMixin(BaseClient):
        async def create_menu(self, menu: dict) -> None:
            await self._post("/cgi-bin/menu/create", menu)

Timeouts are retried like connection errors, although a send that timed out
may have been delivered: WeChat has no idempotency key, and a rare duplicate
notice is better than a lost one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from typing import Any

import httpx
import redis.asyncio as aioredis

from wxbackend.wechat.errors import (
    AccessTokenExpired,
    InvalidCredential,
    WeChatError,
    WeChatNetworkError,
    error_for,
)
from wxbackend.wechat.tokens import AccessTokenManager

log = logging.getLogger(__name__)

# First backoff before a retry (seconds); it doubles per attempt, with jitter.
RETRY_BACKOFF_SECONDS = 0.2

Json = dict[str, Any]


class BaseClient:
    """Credentials, the shared token and the request loop of one WeChat app."""

    def __init__(self, *, appid: str, secret: str, api_base: str, http: httpx.AsyncClient,
                 redis: aioredis.Redis, timeout: float = 5.0, retries: int = 2,
                 token_margin: int = 300, backoff: float = RETRY_BACKOFF_SECONDS) -> None:
        self.appid = appid
        self.secret = secret
        self.api_base = api_base.rstrip("/")
        self.http = http
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.tokens = AccessTokenManager(
            redis, appid, self._fetch_token, margin_seconds=token_margin,
            lock_seconds=timeout * (retries + 1) + backoff * 2 ** (retries + 1) + 5)

    async def _get(self, path: str, params: dict[str, Any] | None = None, *,
                   token: bool = True) -> Json:
        return await self._call("GET", path, params=params, token=token)

    async def _post(self, path: str, body: Json | None = None, *,
                    params: dict[str, Any] | None = None, token: bool = True,
                    raw: bool = False) -> Any:
        """POST JSON; with ``raw`` a non-JSON success answer is returned as bytes."""
        return await self._call("POST", path, params=params, body=body, token=token, raw=raw)

    async def _call(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                    body: Json | None = None, token: bool = True, raw: bool = False) -> Any:
        access_token = await self.tokens.get() if token else None
        try:
            return await self._with_retries(method, path, params, body, access_token, raw)
        except (InvalidCredential, AccessTokenExpired):
            if access_token is None:
                raise
        # The token was rejected: one refresh, one more try; a second rejection surfaces.
        access_token = await self.tokens.refresh(rejected=access_token)
        return await self._with_retries(method, path, params, body, access_token, raw)

    async def _with_retries(self, method: str, path: str, params: dict[str, Any] | None,
                            body: Json | None, access_token: str | None, raw: bool) -> Any:
        for attempt in range(self.retries + 1):
            try:
                return await self._send(method, path, params, body, access_token, raw)
            except WeChatError as exc:
                if not exc.retryable or attempt == self.retries:
                    raise
                delay = self.backoff * 2 ** attempt * random.uniform(0.75, 1.25)
                log.warning("wechat call failed, retrying", extra={"fields": {
                    "path": path, "errcode": exc.errcode, "attempt": attempt + 1,
                    "delay": round(delay, 3)}})
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _send(self, method: str, path: str, params: dict[str, Any] | None,
                    body: Json | None, access_token: str | None, raw: bool) -> Any:
        query = dict(params or {})
        if access_token is not None:
            query["access_token"] = access_token
        # ensure_ascii=False: some WeChat APIs (menus) show \\u escapes literally.
        content = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json; charset=utf-8"} if content else None
        try:
            response = await self.http.request(method, self.api_base + path, params=query,
                                               content=content, headers=headers,
                                               timeout=self.timeout)
        except httpx.TimeoutException:
            raise WeChatNetworkError(f"{path}: timed out after {self.timeout} s") from None
        except httpx.HTTPError as exc:
            raise WeChatNetworkError(f"{path}: {type(exc).__name__}") from None
        return _decode(path, response, raw)

    async def _fetch_token(self, force_refresh: bool) -> tuple[str, int]:
        data = await self._post("/cgi-bin/stable_token", {
            "grant_type": "client_credential", "appid": self.appid, "secret": self.secret,
            "force_refresh": force_refresh}, token=False)
        return data["access_token"], int(data["expires_in"])


def _decode(path: str, response: httpx.Response, raw: bool) -> Any:
    """JSON body or, for image APIs, bytes; errcode != 0 raises its typed error."""
    if response.status_code >= 500:
        raise WeChatNetworkError(f"{path}: HTTP {response.status_code}")
    if raw and not response.headers.get("content-type", "").startswith(("application/json",
                                                                          "text/")):
        return response.content
    try:
        data = json.loads(response.content)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        # A proxy's error page or a wrong api_base: retrying will not help.
        raise WeChatNetworkError(f"{path}: answer is not a JSON object "
                                 f"(HTTP {response.status_code})", retryable=False)
    errcode = int(data.get("errcode") or 0)  # successes often omit errcode
    if errcode != 0:
        raise error_for(errcode, str(data.get("errmsg", "")))
    return data
