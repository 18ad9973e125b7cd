"""Automatic pipelining: Redis commands of concurrent requests share round trips on one connection.

The hot paths (every API request's admission, every callback's claim and
store) make small Redis calls. redis-py spends about 60 µs of Python per
command on the way (a pipeline or pool checkout, an awaited read under a
timeout per reply, one write per command), as much as the work around it.
This module speaks RESP itself on one connection per process, as ioredis'
``enableAutoPipelining`` does: commands issued in the same event-loop turn
leave in one write, and the replies are parsed by hiredis as they arrive, in
order::

    pipe = AutoPipeline.of(ctx)
    won, value = await pipe.run(("SET", key, b"P", "NX", "EX", 600), ("GET", key))
    pipe.send(("SET", key, b"R...", "EX", 600))     # nobody waits; errors are logged
    reply = await pipe.eval(SCRIPT, [key], [arg])   # EVALSHA, the text only if Redis lacks it

Errors are redis-py's, so callers and the 503 mapping treat both clients
alike: a command's error (``ResponseError``) reaches its own caller only; a
lost or refused connection (``ConnectionError``) or a reply slower than
``timeout`` (``TimeoutError``, the connection is then dropped, since later
replies could no longer be matched) fails every command in flight. The next
command connects again; after a refused connect, commands fail at once for
``RETRY_SECONDS`` rather than each waiting on a dead server.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import logging
import ssl
import time
from collections.abc import Sequence
from typing import Any

import hiredis
import redis.asyncio as aioredis
import redis.exceptions

from wxbackend.context import AppContext

log = logging.getLogger(__name__)

Command = tuple[Any, ...]  # ("SET", key, value, "NX", "EX", 600): str, bytes or int arguments
DEFAULT_TIMEOUT = 0.5
RETRY_SECONDS = 1.0


def encode(command: Command) -> bytes:
    """One command in RESP (an array of bulk strings)."""
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Waiter:
    """The replies one caller waits for (``future`` None: nobody waits, errors are logged)."""

    __slots__ = ("expected", "future", "replies", "sent_at")

    def __init__(self, expected: int, future: asyncio.Future[list[Any]] | None) -> None:
        self.expected = expected
        self.future = future
        self.replies: list[Any] = []
        self.sent_at = 0.0  # when its commands were written


class _Connection(asyncio.Protocol):
    """One RESP connection: writes batched per loop turn, replies matched in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(replyError=redis.exceptions.ResponseError)
        self.waiting: collections.deque[_Waiter] = collections.deque()
        self.outgoing: list[bytes] = []
        self.unwritten: list[_Waiter] = []
        self.closed = loop.create_future()
        self._flush_scheduled = False
        self._watchdog: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                waiter = self.waiting[0]
                waiter.replies.append(reply)
                if len(waiter.replies) == waiter.expected:
                    self.waiting.popleft()
                    _deliver(waiter)
        except (hiredis.ProtocolError, IndexError) as exc:  # garbage, or a reply nobody asked for
            self.abort(redis.exceptions.ConnectionError(f"redis protocol error: {exc!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.abort(redis.exceptions.ConnectionError("redis connection lost"))

    # -- sending ------------------------------------------------------------------

    def submit(self, commands: tuple[Command, ...], future: asyncio.Future[list[Any]] | None) -> None:
        if self.transport is None or self.closed.done():
            raise redis.exceptions.ConnectionError("redis connection closed")
        self.outgoing.extend(encode(c) for c in commands)
        waiter = _Waiter(len(commands), future)
        self.waiting.append(waiter)
        self.unwritten.append(waiter)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)
        if self._watchdog is None:
            self._watchdog = self.loop.call_later(self.timeout, self._check_overdue)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.outgoing and self.transport is not None and not self.closed.done():
            data, self.outgoing = b"".join(self.outgoing), []
            self.transport.write(data)
            # The clock starts at the write, so a busy event loop is not taken for a slow Redis.
            now = time.monotonic()
            for waiter in self.unwritten:
                waiter.sent_at = now
            self.unwritten.clear()

    def _check_overdue(self) -> None:
        self._watchdog = None
        if not self.waiting or not self.waiting[0].sent_at:
            if self.waiting:
                self._watchdog = self.loop.call_later(self.timeout, self._check_overdue)
            return
        age = time.monotonic() - self.waiting[0].sent_at
        if age >= self.timeout:
            self.abort(redis.exceptions.TimeoutError(f"redis reply overdue ({age:.2f} s)"))
        else:
            self._watchdog = self.loop.call_later(self.timeout - age, self._check_overdue)

    def abort(self, error: Exception) -> None:
        """Fail everything in flight and drop the connection (replies can no longer be matched)."""
        if not self.closed.done():
            self.closed.set_result(None)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self.transport is not None:
            self.transport.abort()
        waiting, self.waiting = self.waiting, collections.deque()
        if any(w.future is None for w in waiting):
            log.warning("redis batch failed: %s", error.__class__.__name__)
        for waiter in waiting:
            if waiter.future is not None and not waiter.future.done():
                waiter.future.set_exception(error)


@functools.lru_cache(maxsize=64)
def _sha1(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 - Redis names scripts so


def _deliver(waiter: _Waiter) -> None:
    failed = next((r for r in waiter.replies if isinstance(r, Exception)), None)
    future = waiter.future
    if future is None:
        if failed is not None:
            log.warning("redis command failed: %s", failed)
    elif future.done():
        pass  # the caller gave up (cancelled)
    elif failed is not None:
        future.set_exception(failed)
    else:
        future.set_result(waiter.replies)


class AutoPipeline:
    """Commands of concurrent callers over one pipelined connection (per process and Redis)."""

    def __init__(self, redis: aioredis.Redis, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.redis = redis
        self.timeout = timeout
        self._address = redis.connection_pool.connection_kwargs
        self._ssl = "SSL" in redis.connection_pool.connection_class.__name__
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self._refused_until = 0.0
        self._unsent: set[asyncio.Task[Any]] = set()

    @classmethod
    def of(cls, ctx: AppContext) -> AutoPipeline:
        """The context's pipeline (one per process and Redis client), closed with the context."""
        pipe = ctx.state(cls, lambda: cls._opened(ctx))
        if pipe.redis is not ctx.redis:  # the context's client was replaced
            pipe = ctx.replace_state(cls._opened(ctx))
        return pipe

    @classmethod
    def _opened(cls, ctx: AppContext) -> AutoPipeline:
        pipe = cls(ctx.redis)
        ctx.on_close.append(pipe.close)
        return pipe

    async def run(self, *commands: Command) -> list[Any]:
        """Run ``commands`` (in order, not as a transaction); their replies."""
        conn = self._conn if self._usable(self._conn) else await self._connect()
        future: asyncio.Future[list[Any]] = conn.loop.create_future()
        conn.submit(commands, future)
        return await future

    async def eval(self, script: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run a Lua script by its SHA1; its text goes out only when Redis does not know it yet."""
        try:
            (reply,) = await self.run(("EVALSHA", _sha1(script), len(keys), *keys, *args))
        except redis.exceptions.ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            (reply,) = await self.run(("EVAL", script, len(keys), *keys, *args))
        return reply

    def send(self, *commands: Command) -> None:
        """Queue ``commands`` without waiting for them (they leave with this loop turn's batch)."""
        if self._usable(self._conn):
            self._conn.submit(commands, None)  # type: ignore[union-attr]
            return
        task = asyncio.ensure_future(self.run(*commands))
        self._unsent.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[Any]) -> None:
        self._unsent.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("redis command failed: %s", task.exception())

    async def flush(self) -> None:
        """Wait until every queued command has its reply (tests, shutdown)."""
        if self._unsent:
            await asyncio.wait(list(self._unsent))
        if self._usable(self._conn):
            with contextlib.suppress(redis.exceptions.RedisError):  # down: nothing left to wait for
                await self.run(("PING",))  # replies come in order: after this one, all are in

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.abort(redis.exceptions.ConnectionError("redis pipeline closed"))
            self._conn = None

    @staticmethod
    def _usable(conn: _Connection | None) -> bool:
        return conn is not None and not conn.closed.done()

    async def _connect(self) -> _Connection:
        # Concurrent callers share one attempt; a refused one is not retried for a moment.
        if self._connecting is None:
            if time.monotonic() < self._refused_until:
                raise redis.exceptions.ConnectionError("redis unavailable (retrying shortly)")
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        kw = self._address
        conn = _Connection(loop, self.timeout)
        try:
            async with asyncio.timeout(self.timeout):
                if kw.get("path"):
                    await loop.create_unix_connection(lambda: conn, kw["path"])
                else:
                    await loop.create_connection(
                        lambda: conn, kw.get("host", "localhost"), kw.get("port", 6379),
                        ssl=ssl.create_default_context() if self._ssl else None)
                await self._hello(conn)
        except (OSError, redis.exceptions.RedisError) as exc:  # TimeoutError is an OSError
            conn.abort(redis.exceptions.ConnectionError("redis connect failed"))
            self._refused_until = time.monotonic() + RETRY_SECONDS
            raise redis.exceptions.ConnectionError(f"redis connect failed: {exc!r}") from None
        self._conn = conn
        return conn

    async def _hello(self, conn: _Connection) -> None:
        setup: list[Command] = []
        if password := self._address.get("password"):
            username = self._address.get("username")
            setup.append(("AUTH", username, password) if username else ("AUTH", password))
        if db := self._address.get("db"):
            setup.append(("SELECT", db))
        if setup:
            future: asyncio.Future[list[Any]] = conn.loop.create_future()
            conn.submit(tuple(setup), future)
            await future
