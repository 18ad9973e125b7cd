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

With Redis down, ``claim`` answers ``Claim.UNAVAILABLE``: the message is
processed without dedup (a retry may then run twice) and the outage is logged.
The claims and stores of concurrent callbacks share Redis round trips
(:mod:`wxbackend.autopipe`).
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import time

import redis.exceptions

from wxbackend import metrics
from wxbackend.autopipe import DEFAULT_TIMEOUT, AutoPipeline
from wxbackend.context import AppContext
from wxbackend.wechat.router import Inbound

log = logging.getLogger("wxbackend.wechat.dedup")

PREFIX = "wx:oa:dedup:"
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


class Dedup:
    def __init__(self, ctx: AppContext) -> None:
        self.redis = ctx.redis
        self.pipe = AutoPipeline.of(ctx)
        self.ttl = ctx.settings.wechat.dedup_ttl_seconds

    async def claim(self, key: str) -> tuple[Claim, str | None]:
        """Claim ``key`` or report what an earlier delivery left there."""
        try:
            (won,) = await self.pipe.run(("SET", key, _PENDING, "NX", "EX", self.ttl))
            if won is not None:
                return Claim.NEW, None
            # Taken: a retry or a concurrent delivery (rare), so a second round trip.
            (value,) = await self.pipe.run(("GET", key))
            answered, reply = _decode(value)
        except REDIS_ERRORS as exc:
            self._degraded("claim", exc)
            return Claim.UNAVAILABLE, None
        return (Claim.DONE, reply) if answered else (Claim.PENDING, None)

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
