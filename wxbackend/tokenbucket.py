"""A token bucket in Redis, shared by every worker of the deployment.

Each caller *reserves* tokens and is told how long to wait before using them
(GCRA, "virtual scheduling"): one Lua call, no polling, and callers that
reserve at the same time are spaced at exactly the configured rate whatever
machine they run on (Redis's clock is the only clock)::

    wait = await reserve(redis, "notify:bucket:wx123:oa_template", rate=20, burst_seconds=1, n=10)
    await asyncio.sleep(wait)
    ...  # send 10 messages

``burst_seconds`` of unused capacity may be spent at once (a full bucket);
after that the rate holds. A reservation that is not used (the caller died)
wastes its tokens: the bucket errs on the side of WeChat's limits.
"""

from __future__ import annotations

import redis.asyncio as aioredis

# KEYS[1] the bucket; ARGV rate (tokens/s), burst (s), n. Returns the wait in seconds as
# a string (Lua numbers become integers in Redis replies). TIME before a write is fine:
# Redis 5+ replicates a script by its effects.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + n / rate
-- The group may go when its last token conforms: burst seconds ahead of the schedule.
local go = new_tat - burst
if go < now then go = now end
redis.call('SET', KEYS[1], string.format('%.6f', new_tat),
           'PX', math.ceil((new_tat - now + burst) * 1000) + 1000)
return string.format('%.6f', go - now)
"""


async def reserve(redis: aioredis.Redis, key: str, *, rate: float, burst_seconds: float,
                  n: int = 1) -> float:
    """Take ``n`` tokens; the seconds to wait before using them (0.0: now)."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    wait = await redis.eval(_RESERVE, 1, key, repr(float(rate)), repr(float(burst_seconds)), n)
    return max(0.0, float(wait))
