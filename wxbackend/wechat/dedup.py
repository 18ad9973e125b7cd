"""Drop WeChat's retries: one claim per MsgId (or event key) in Redis.

WeChat retries a callback three times when it hears nothing within 5 s, and
may deliver the same message twice at once. The first delivery claims the key
atomically (``SET NX``) *before* any effect runs; the answer is then stored
under the same key, so a retry gets the same reply and never runs the effects
again. A delivery that finds the claim still pending waits briefly for the
stored answer, else answers ``success``::

    dedup = Dedup(ctx)
    state, stored = await dedup.claim(key)
    if state is Claim.NEW:
        ... run effects, build reply_xml ...
        dedup.store(key, reply_xml)            # None: "answered success"
    elif state is Claim.DONE:
        reply_xml = stored                     # None: answer success
    elif state is Claim.PENDING:
        reply_xml = await dedup.wait(key, seconds=2.5)

The same claim remembers the delivery's signed ``(timestamp, nonce)`` for
the freshness window (``wx:oa:nonce:*``, valued by a digest of the message):
that pair used again for *another* message is refused (``Claim.REUSED``),
for the same message (a retry) it goes on to the dedup as above. Both are
one Lua script, so one round trip, as the bare claim was::

    state, stored = await dedup.claim(key, Delivery.of(timestamp, nonce, xml, ttl))
    # key None (a message nobody handles): only the pair is remembered

With Redis down, ``claim`` answers ``Claim.UNAVAILABLE``: the message is
processed without dedup or nonce memory (a retry may then run twice) and the
outage is logged. The claims and stores of concurrent callbacks share Redis
round trips (:mod:`wxbackend.autopipe`).
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import time
from dataclasses import dataclass

import redis.exceptions

from wxbackend import metrics
from wxbackend.autopipe import DEFAULT_TIMEOUT, AutoPipeline
from wxbackend.context import AppContext
from wxbackend.wechat.router import Inbound

log = logging.getLogger("wxbackend.wechat.dedup")

PREFIX = "wx:oa:dedup:"
NONCE_PREFIX = "wx:oa:nonce:"
_PENDING = b"P"
_NO_REPLY = b"S"
_REPLY = b"R"
# How long one Redis call of the dedup may take before we give up on it: the
# callback must answer well inside WeChat's 5 s even when Redis hangs. The
# pipeline enforces it on the claim and store; ``wait`` on its own reads.
REDIS_TIMEOUT = DEFAULT_TIMEOUT
POLL_SECONDS = 0.02
REDIS_ERRORS = (redis.exceptions.RedisError, OSError, asyncio.TimeoutError)


class Claim(enum.Enum):
    NEW = "new"
    PENDING = "pending"
    DONE = "done"
    UNAVAILABLE = "unavailable"
    REUSED = "reused"  # the delivery's (timestamp, nonce) already carried another message


# KEYS[1] the delivery's (timestamp, nonce), KEYS[2] the dedup key (absent: none);
# ARGV digest, its TTL, the pending marker, the dedup TTL. Atomic, so two
# deliveries racing with one pair cannot both pass with different messages.
_CLAIM = """
local seen = redis.call('GET', KEYS[1])
if seen then
  if seen ~= ARGV[1] then return {0} end
else
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
if not KEYS[2] then return {1} end
if redis.call('SET', KEYS[2], ARGV[3], 'NX', 'EX', ARGV[4]) then return {1} end
return {2, redis.call('GET', KEYS[2])}
"""


@dataclass(frozen=True, slots=True)
class Delivery:
    """A delivery's signed (timestamp, nonce), what it carried, how long to remember it."""

    key: str
    digest: bytes
    ttl: int

    @classmethod
    def of(cls, timestamp: str, nonce: str, message_xml: str, ttl: int) -> Delivery:
        # The digest is of the message itself (decrypted in safe mode), not of the
        # ciphertext: a retry re-encrypted under the same pair is still the same message.
        digest = hashlib.sha1(message_xml.encode()).digest()  # noqa: S324 - an identity, not a MAC
        return cls(f"{NONCE_PREFIX}{timestamp}:{nonce}", digest, max(1, ttl))


def dedup_key(msg: Inbound) -> str:
    """MsgId for messages; FromUserName + CreateTime + Event (+ EventKey) for events."""
    if msg.msg_id is not None:
        return f"{PREFIX}m:{msg.msg_id}"
    identity = "\x1f".join((msg.openid, str(msg.create_time), msg.msg_type, msg.event, msg.key))
    return PREFIX + "e:" + hashlib.sha1(identity.encode()).hexdigest()  # noqa: S324 - a key, not a MAC


def _decode(value: bytes | None) -> tuple[bool, str | None]:
    """(answered, reply_xml) of a stored value."""
    if value is None or value == _PENDING:
        return False, None
    if value.startswith(_REPLY):
        return True, value[1:].decode()
    return True, None


def _taken(value: bytes | None) -> tuple[Claim, str | None]:
    answered, reply = _decode(value)
    return (Claim.DONE, reply) if answered else (Claim.PENDING, None)


class Dedup:
    def __init__(self, ctx: AppContext) -> None:
        self.redis = ctx.redis
        self.pipe = AutoPipeline.of(ctx)
        self.ttl = ctx.settings.wechat.dedup_ttl_seconds

    async def claim(self, key: str | None, delivery: Delivery | None = None) -> tuple[Claim, str | None]:
        """Claim ``key`` or report what an earlier delivery left there.

        With ``delivery``, its (timestamp, nonce) is remembered in the same
        round trip, or ``Claim.REUSED`` answered (nothing claimed) when it
        carried another message before. ``key`` None: nothing to claim
        (``Claim.NEW`` once the pair is remembered).
        """
        try:
            if delivery is not None:
                return await self._claim_once(key, delivery)
            if key is None:
                return Claim.NEW, None
            (won,) = await self.pipe.run(("SET", key, _PENDING, "NX", "EX", self.ttl))
            if won is not None:
                return Claim.NEW, None
            # Taken: a retry or a concurrent delivery (rare), so a second round trip.
            (value,) = await self.pipe.run(("GET", key))
        except REDIS_ERRORS as exc:
            self._degraded("claim", exc)
            return Claim.UNAVAILABLE, None
        return _taken(value)

    async def _claim_once(self, key: str | None, delivery: Delivery) -> tuple[Claim, str | None]:
        keys = (delivery.key,) if key is None else (delivery.key, key)
        reply = await self.pipe.eval(_CLAIM, keys, (delivery.digest, delivery.ttl, _PENDING, self.ttl))
        if reply[0] == 0:
            return Claim.REUSED, None
        if reply[0] == 1:
            return Claim.NEW, None
        return _taken(reply[1])

    def store(self, key: str, reply_xml: str | None) -> None:
        """Remember the answer (plaintext XML, or None for "success").

        Not awaited: it goes out with the next batch while the answer is sent,
        long before WeChat's first retry (5 s); a concurrent delivery waits
        for it in :meth:`wait`. A failure is logged by the pipeline.
        """
        value = _REPLY + reply_xml.encode() if reply_xml is not None else _NO_REPLY
        self.pipe.send(("SET", key, value, "EX", self.ttl))

    async def wait(self, key: str, seconds: float) -> str | None:
        """The answer of the delivery that holds the claim, or None after ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS)
            try:
                async with asyncio.timeout(REDIS_TIMEOUT):
                    value = await self.redis.get(key)
            except REDIS_ERRORS as exc:
                self._degraded("wait", exc)
                return None
            answered, reply = _decode(value)
            if answered:
                return reply
        return None

    def _degraded(self, step: str, exc: BaseException) -> None:
        metrics.DEPENDENCY_ERRORS.labels("redis").inc()
        log.warning("callback dedup unavailable, processing without it",
                    extra={"fields": {"step": step, "error": exc.__class__.__name__}})
