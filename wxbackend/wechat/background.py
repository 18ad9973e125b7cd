"""Work the callback finishes after it has answered, and the late reply it sends.

A callback that cannot finish within its budget answers ``success`` at once
(:mod:`wxbackend.wechat.budget`); its handler keeps running, counted here, and
its reply reaches the member as a customer-service message
(``/cgi-bin/message/custom/send``). asyncio keeps
only weak references to tasks, so the running ones are held in a set on the
context until they finish; failures are logged, never raised, and a reply
refused for a passing reason is tried again by a worker
(:mod:`wxbackend.wechat.late_reply`)::

    spawn(ctx, send_late_reply(ctx, openid, reply), "late reply")
    await drain(ctx)          # tests and shutdown: wait for what is running
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from wxbackend import autopipe
from wxbackend.context import AppContext
from wxbackend.wechat.router import Reply

log = logging.getLogger("wxbackend.wechat.background")



class BackgroundTasks(set):
    """The tasks of a process still running after their request answered."""


def _tasks(ctx: AppContext) -> set[asyncio.Task[Any]]:
    return ctx.state(BackgroundTasks)


def spawn(ctx: AppContext, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
    """Run ``coro`` in the background, holding a strong reference until it ends."""
    return track(ctx, asyncio.ensure_future(coro), what)


def track(ctx: AppContext, task: asyncio.Task[Any], what: str) -> asyncio.Task[Any]:
    """Count a running task as background work of ``ctx`` (``drain`` waits for it)."""
    tasks = _tasks(ctx)
    tasks.add(task)

    def finished(done: asyncio.Task[Any]) -> None:
        tasks.discard(done)
        if not done.cancelled() and done.exception() is not None:
            log.error("background %s failed", what, exc_info=done.exception())

    task.add_done_callback(finished)
    return task


async def drain(ctx: AppContext, seconds: float = 10.0) -> None:
    """Wait up to ``seconds`` for the background work of this context (tests, shutdown)."""
    while tasks := list(_tasks(ctx)):
        await asyncio.wait(tasks, timeout=seconds)
        if any(not t.done() for t in tasks):
            return
    await autopipe.AutoPipeline.of(ctx).flush()  # the last replies' dedup records


async def send_late_reply(ctx: AppContext, openid: str, reply: Reply | None) -> None:
    """Send the reply of a handler that missed the budget as a customer-service text."""
    if reply is None:
        return
    from wxbackend.wechat.client import oa_client  # the outbound client (its own module)

    try:
        await oa_client(ctx).send_custom_text(openid, reply.as_text())
    except Exception as exc:  # WeChatError (45009 quota, 40001, -1 ...), timeouts, network
        log.warning("late reply not delivered", extra={"fields": {
            "openid": openid, "error": exc.__class__.__name__,
            "errcode": getattr(exc, "errcode", None), "errmsg": getattr(exc, "errmsg", str(exc))}})
        from wxbackend.wechat.late_reply import retry_later  # the job queue tries again

        await retry_later(ctx, openid, reply.as_text(), exc)
        return
    log.info("late reply sent as customer-service message", extra={"fields": {"openid": openid}})
