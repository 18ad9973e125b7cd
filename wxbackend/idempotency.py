"""Idempotency keys: the same key and body get the same answer, once.

As pretix's API middleware: the first request claims the key, runs, and
stores its answer; a repeat with the same body replays the answer without a
second effect; a repeat with another body, or while the first still runs, is
a 409::

    claim = await claim_key(redis, cipher, scope, key, body, ttl)
    if claim.replay: return claim.replay          # (status, body)
    ... run ...
    await claim.store(status, body)               # or claim.release() on failure

The stored answer is what the endpoint returned: a bearer token for a login,
the clear ID-card number and phone for a bind. Tokens are otherwise kept only
hashed and personal data only encrypted, so this cache must not hold them in
clear for a day: the answer is sealed with the field key (AES-GCM, the Redis
key as associated data, so a record copied under another caller's key does not
open), and the request body is remembered as a keyed hash, not a plain SHA-256
that could be brute-forced back to an ID-card number.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from cryptography.exceptions import InvalidTag

from wxbackend.errors import Conflict
from wxbackend.fieldcrypto import FieldCipher

RUNNING_TTL = 60
# Replace a record by the running marker only if it is still the one read: two
# retries that both find an unusable record must not both get to run.
_REPLACE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""
# Format of the stored record; a record of another version (the clear one this
# replaced) is dropped and the key claimed afresh.
VERSION = 2


@dataclass
class Claim:
    redis: aioredis.Redis
    cipher: FieldCipher
    key: str
    body_hash: str
    ttl: int
    replay: tuple[int, bytes] | None = None

    async def store(self, status: int, body: bytes) -> None:
        sealed = self.cipher.encrypt(body.decode(), purpose=_purpose(self.key))
        record = {"v": VERSION, "hash": self.body_hash, "status": status,
                  "sealed": base64.b64encode(bytes(sealed)).decode()}
        await self.redis.set(self.key, json.dumps(record), ex=self.ttl)

    async def release(self) -> None:
        """The call failed in a way worth retrying: forget the key."""
        await self.redis.delete(self.key)

    def open(self, record: dict[str, Any]) -> bytes | None:
        """The stored answer, or None when the record cannot be read back."""
        try:
            return self.cipher.decrypt(base64.b64decode(record["sealed"]),
                                       purpose=_purpose(self.key)).encode()
        except (KeyError, ValueError, InvalidTag):
            return None


def _purpose(redis_key: str) -> str:
    # Associated data: the ciphertext belongs to this caller, method, path and key.
    return "idempotency:" + redis_key


async def claim_key(redis: aioredis.Redis, cipher: FieldCipher, scope: str, key: str,
                    body: bytes, ttl: int) -> Claim:
    body_hash = cipher.blind_index(hashlib.sha256(body).hexdigest(), "idempotency_body")
    redis_key = "idem:" + hashlib.sha256(f"{scope}\n{key}".encode()).hexdigest()
    claim = Claim(redis, cipher, redis_key, body_hash, ttl)
    running = json.dumps({"v": VERSION, "hash": body_hash, "running": True})
    if await redis.set(redis_key, running, ex=RUNNING_TTL, nx=True):
        return claim
    stored = await redis.get(redis_key)
    record = json.loads(stored) if stored else None
    if record is None:  # expired between the two calls: claim it again
        return await claim_key(redis, cipher, scope, key, body, ttl)
    if record.get("v") != VERSION:
        return await _reclaim(claim, stored, running, cipher, scope, key, body)
    if record["hash"] != body_hash:
        raise Conflict("idempotency_key_reused", "该请求编号已用于另一项不同的请求")
    if record.get("running"):
        raise Conflict("idempotency_in_progress", "相同的请求正在处理中，请稍后再试")
    answer = claim.open(record)
    if answer is None:  # sealed under another field key: as if never stored
        return await _reclaim(claim, stored, running, cipher, scope, key, body)
    claim.replay = (record["status"], answer)
    return claim


async def _reclaim(claim: Claim, stored: bytes, running: str, cipher: FieldCipher, scope: str,
                   key: str, body: bytes) -> Claim:
    """Replace a record this code cannot replay (an old clear one, or one sealed under
    a former field key) by our running marker: the request runs as a first one."""
    if await claim.redis.eval(_REPLACE, 1, claim.key, stored, running, RUNNING_TTL):
        return claim
    return await claim_key(claim.redis, cipher, scope, key, body, claim.ttl)  # changed meanwhile
