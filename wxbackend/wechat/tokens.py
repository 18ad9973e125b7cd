"""One access token per appid for the whole deployment, kept in Redis.

WeChat gives each app one valid ``access_token`` at a time, so N processes
must share it: the token lives under ``wx:token:<appid>`` with a TTL that ends
``token_refresh_margin_seconds`` before WeChat's expiry, and exactly one
process fetches a new one (``/cgi-bin/stable_token``) while holding the Redis
lock ``wx:token:<appid>:lock``; the others wait for the key to reappear::

    tokens = AccessTokenManager(redis, "wx123", fetch, margin_seconds=300)
    token = await tokens.get()
    ...  # WeChat answered 40001/42001 for `token`:
    token = await tokens.refresh(rejected=token)

``fetch(force_refresh)`` is the client's HTTP call; this module only knows
Redis. A rejected token is replaced by a normal stable_token call first;
only when WeChat hands back the very token it rejected do we use
``force_refresh`` (WeChat allows 20 a day, at least 30 s apart; we keep a
30 s cooldown in Redis so a persistent 40001 cannot burn them).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from wxbackend.wechat.errors import InvalidCredential, WeChatNetworkError

log = logging.getLogger(__name__)

# fetch(force_refresh) -> (access_token, expires_in seconds)
TokenFetch = Callable[[bool], Awaitable[tuple[str, int]]]

# WeChat ignores a second force_refresh within 30 s; so do we.
FORCE_COOLDOWN_SECONDS = 30

# Delete the lock only if we still own it (it may have expired and been retaken).
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class AccessTokenManager:
    """Cached access token of one appid, refreshed by one process at a time."""

    def __init__(self, redis: aioredis.Redis, appid: str, fetch: TokenFetch, *,
                 margin_seconds: int, lock_seconds: float = 30.0,
                 poll_seconds: float = 0.05) -> None:
        self.redis = redis
        self.appid = appid
        self.fetch = fetch
        self.margin_seconds = margin_seconds
        # The lock outlives the slowest fetch (timeouts x retries), so a holder
        # that dies frees it, and a waiter gives up only after that long.
        self.lock_seconds = lock_seconds
        self.poll_seconds = poll_seconds
        self.key = f"wx:token:{appid}"
        self.lock_key = f"{self.key}:lock"
        self.force_key = f"{self.key}:forced"

    async def get(self) -> str:
        """The current token, fetching one if none is cached."""
        return await self._obtain(rejected=None)

    async def refresh(self, rejected: str) -> str:
        """A token other than ``rejected`` (which WeChat just refused with 40001/42001)."""
        return await self._obtain(rejected=rejected)

    async def cached(self) -> str | None:
        raw = await self.redis.get(self.key)
        return raw.decode() if raw else None

    async def _obtain(self, rejected: str | None) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lock_seconds + 1
        while True:
            token = await self.cached()
            if token and token != rejected:
                return token
            owner = secrets.token_hex(8)
            if await self.redis.set(self.lock_key, owner, nx=True,
                                    px=int(self.lock_seconds * 1000)):
                try:
                    return await self._refresh_locked(rejected)
                finally:
                    await self.redis.eval(_RELEASE, 1, self.lock_key, owner)
            if loop.time() > deadline:
                raise WeChatNetworkError(f"waited too long for the access token of {self.appid}")
            await asyncio.sleep(self.poll_seconds)

    async def _refresh_locked(self, rejected: str | None) -> str:
        # Another process may have stored a fresh token between our read and the lock.
        token = await self.cached()
        if token and token != rejected:
            return token
        token, expires_in = await self.fetch(False)
        if rejected is not None and token == rejected:
            token, expires_in = await self._force(rejected)
        await self._store(token, expires_in)
        log.info("access token refreshed", extra={"fields": {"appid": self.appid,
                                                             "expires_in": expires_in}})
        return token

    async def _force(self, rejected: str) -> tuple[str, int]:
        if not await self.redis.set(self.force_key, b"1", nx=True, ex=FORCE_COOLDOWN_SECONDS):
            raise InvalidCredential(40001, "access token rejected again right after a forced "
                                           "refresh; not forcing another")
        log.warning("access token rejected but still current: forcing a refresh",
                    extra={"fields": {"appid": self.appid}})
        token, expires_in = await self.fetch(True)
        if token == rejected:
            raise InvalidCredential(40001, "forced refresh returned the rejected token")
        return token, expires_in

    async def _store(self, token: str, expires_in: int) -> None:
        ttl = expires_in - self.margin_seconds
        if ttl < 1:
            # WeChat renews stable tokens only in their last 5 minutes, so a token
            # fetched late may live less than our margin: keep it half its life.
            ttl = max(1, expires_in // 2)
        await self.redis.set(self.key, token, ex=ttl)
