"""Automatic pipelining: Redis commands of concurrent requests share round trips.

Every callback makes two small Redis calls (claim, store). Under load a round
trip costs more in system calls than the command itself, so commands issued
while one round trip is in flight are sent together in the next one, as
ioredis' ``enableAutoPipelining`` does. Alone, a command goes out at once;
under load, the batch grows by itself::

    pipe = AutoPipeline.of(ctx)
    won, value = await pipe.run(("set", (key, b"P"), {"nx": True, "ex": 600}),
                                ("get", (key,), {}))

A command's error (or the connection's) is raised to its own caller only;
commands sent with :meth:`AutoPipeline.send` (nobody waits for them) have
their errors logged.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio as aioredis

from wxbackend.context import AppContext

log = logging.getLogger(__name__)

Command = tuple[str, tuple[Any, ...], dict[str, Any]]
# Commands of one caller, and the future it waits on (None: nobody waits).
Entry = tuple[tuple[Command, ...], "asyncio.Future[list[Any]] | None"]


class AutoPipeline:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._queue: list[Entry] = []
        self._sender: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, ctx: AppContext) -> AutoPipeline:
        """The context's pipeline (one per process and Redis client)."""
        pipe = ctx.caches.get("wechat.autopipe")
        if pipe is None or pipe.redis is not ctx.redis:
            pipe = ctx.caches["wechat.autopipe"] = cls(ctx.redis)
        return pipe

    async def run(self, *commands: Command) -> list[Any]:
        """Run ``commands`` (in order, not as a transaction); their results."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._enqueue(commands, future)
        return await future

    def send(self, *commands: Command) -> None:
        """Queue ``commands`` without waiting for them (they go out with the next batch)."""
        self._enqueue(commands, None)

    async def flush(self) -> None:
        """Wait until everything queued was sent (tests, shutdown)."""
        while self._sender is not None:
            await asyncio.shield(self._sender)

    def _enqueue(self, commands: tuple[Command, ...], future: asyncio.Future[list[Any]] | None) -> None:
        self._queue.append((commands, future))
        if self._sender is None:
            self._sender = asyncio.ensure_future(self._send_all())

    async def _send_all(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                await self._send(batch)
        finally:
            self._sender = None

    async def _send(self, batch: list[Entry]) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for commands, _ in batch:
                    for name, args, kwargs in commands:
                        getattr(pipe, name)(*args, **kwargs)
                results = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # connection lost, cancelled at shutdown ...
            _fail(batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        position = 0
        for commands, future in batch:
            mine = results[position:position + len(commands)]
            position += len(commands)
            _deliver(future, mine)


def _fail(batch: list[Entry], exc: BaseException) -> None:
    if any(future is None for _, future in batch):
        log.warning("redis batch failed: %s", exc.__class__.__name__)
    error = exc if isinstance(exc, Exception) else ConnectionError(str(exc))
    for _, future in batch:
        if future is not None and not future.done():
            future.set_exception(error)


def _deliver(future: asyncio.Future[list[Any]] | None, results: list[Any]) -> None:
    failed = next((r for r in results if isinstance(r, Exception)), None)
    if future is None:
        if failed is not None:
            log.warning("redis command failed: %s", failed)
    elif future.done():
        pass  # the caller gave up (timeout)
    elif failed is not None:
        future.set_exception(failed)
    else:
        future.set_result(results)
