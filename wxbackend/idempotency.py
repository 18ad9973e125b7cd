"""Idempotency keys: the same key and body get the same answer, once.

As pretix's API middleware: the first request claims the key, runs, and
stores its answer; a repeat with the same body replays the answer without a
second effect; a repeat with another body, or while the first still runs, is
a 409::

    claim = await claim_key(redis, scope, key, body, ttl)
    if claim.replay: return claim.replay          # (status, body)
    ... run ...
    await claim.store(status, body)               # or claim.release() on failure
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import redis.asyncio as aioredis

from wxbackend.errors import Conflict

RUNNING_TTL = 60


@dataclass
class Claim:
    redis: aioredis.Redis
    key: str
    body_hash: str
    ttl: int
    replay: tuple[int, bytes] | None = None

    async def store(self, status: int, body: bytes) -> None:
        record = {"hash": self.body_hash, "status": status, "body": body.decode()}
        await self.redis.set(self.key, json.dumps(record), ex=self.ttl)

    async def release(self) -> None:
        """The call failed in a way worth retrying: forget the key."""
        await self.redis.delete(self.key)


async def claim_key(redis: aioredis.Redis, scope: str, key: str, body: bytes, ttl: int) -> Claim:
    body_hash = hashlib.sha256(body).hexdigest()
    redis_key = "idem:" + hashlib.sha256(f"{scope}\n{key}".encode()).hexdigest()
    claim = Claim(redis, redis_key, body_hash, ttl)
    running = json.dumps({"hash": body_hash, "running": True})
    if await redis.set(redis_key, running, ex=RUNNING_TTL, nx=True):
        return claim
    stored = await redis.get(redis_key)
    record = json.loads(stored) if stored else None
    if record is None:  # expired between the two calls: claim it again
        return await claim_key(redis, scope, key, body, ttl)
    if record["hash"] != body_hash:
        raise Conflict("idempotency_key_reused", "该请求编号已用于另一项不同的请求")
    if record.get("running"):
        raise Conflict("idempotency_in_progress", "相同的请求正在处理中，请稍后再试")
    claim.replay = (record["status"], record["body"].encode())
    return claim
