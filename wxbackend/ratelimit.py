"""Fixed-window rate limits in Redis, shared by every server process.

    retry_after = await hit(redis, "api:ip:10.0.0.1", limit=600, window=60)
    if retry_after:
        ...  # answer 429 with Retry-After: retry_after
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis

# INCR and set the expiry in one step, so a crash between them cannot leave a
# counter that never expires (Redis 6.2 has no EXPIRE ... NX).
_HIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""


async def hit(redis: aioredis.Redis, key: str, *, limit: int, window: int) -> int | None:
    """Count one request; the seconds to wait when over the limit, else None."""
    bucket = int(time.time() // window)
    count = await redis.eval(_HIT, 1, f"rl:{key}:{bucket}", window)
    if int(count) <= limit:
        return None
    return max(1, window - int(time.time()) % window)
