"""Background jobs on arq: the registry of jobs and schedules, and ``enqueue``.

A capability marks its job functions with :func:`job`, :func:`cron_job` or
:func:`pruner` and lists them in its declaration (``Capability.jobs``); the
worker runs what the installed capabilities declare (``ctx.registry``). A job
receives the :class:`~wxbackend.context.AppContext` and small arguments: ids,
never payloads, so a job read back after a crash acts on the current state::

    from wxbackend import jobs

    @jobs.job(timeout=120)
    async def deliver(ctx: AppContext, ids: list[str]) -> int:
        ...

    # [jobs] meeting_reminders = "* * * * *"  (minute hour day month weekday, Asia/Shanghai)
    @jobs.cron_job("meeting_reminders", "meeting_reminders")
    async def remind(ctx: AppContext) -> None:
        ...

    await jobs.enqueue(ctx, "deliver", ["65f0..."], _job_id="deliver:65f0...")

Rules the registry enforces, so that a capability only writes its function:

- Each job is idempotent: arq runs a job again when its worker died (after
  ``[jobs] job_timeout_seconds`` + 10 s) and when it raises :class:`Retry`.
  A ``_job_id`` makes ``enqueue`` a no-op while a job with that id is queued
  or running.
- A job failing because MongoDB or Redis is unreachable is retried with
  exponential backoff (``[jobs] retry_backoff_seconds``) up to ``[jobs]
  max_tries``; any other exception fails it at once. Failures are logged and
  kept in Redis (:func:`recent_failures`) for the management web.
- A cron job runs once per tick however many workers run (arq's ``unique``
  cron: the job id is the name plus the tick). Its schedule is a setting of
  ``[jobs]``; an empty schedule disables it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis.exceptions
from arq import Retry
from arq.connections import ArqRedis
from arq.cron import CronJob, cron
from arq.jobs import Job
from arq.worker import Function, func
from pymongo.errors import ConnectionFailure

from wxbackend.capability import Capability
from wxbackend.context import AppContext
from wxbackend.settings import ConfigError

log = logging.getLogger("wxbackend.jobs")

__all__ = ["PLATFORM", "Retry", "cron_job", "enqueue", "job", "parse_schedule", "pruner"]


FAILED_KEY = "jobs:failed"          # list of recent failures (JSON), newest first
COUNTS_KEY = "jobs:counts"          # hash "<job>:done" / "<job>:failed" / "<job>:retried"
WORKER_KEY = "jobs:worker:"         # + host:pid, a heartbeat per running worker
WORKERS_KEY = "jobs:workers"        # set of the ids of workers that started (and did not stop)
RUNNING_KEY = "jobs:running:"       # + worker id: set of the job ids that worker is running
KEEP_FAILURES = 200

TRANSIENT = (ConnectionFailure, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

JobFunc = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class JobSpec:
    name: str
    func: JobFunc
    timeout: float | None = None
    max_tries: int | None = None


@dataclass(frozen=True)
class CronSpec:
    name: str
    setting_key: str
    func: Callable[[AppContext], Awaitable[Any]]
    timeout: float | None = None


@dataclass(frozen=True)
class PrunerSpec:
    """A function the daily ``prune`` job runs: it deletes its capability's expired data."""

    name: str
    func: Callable[[AppContext], Awaitable[int]]

# The arq job id of the job running in this task (None outside jobs).
current_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)


def job(function: JobFunc | None = None, *, name: str | None = None, timeout: float | None = None,
        max_tries: int | None = None) -> Any:
    """Mark ``async def f(ctx, *args)`` as the job ``name`` (default: its name)."""
    def mark(f: JobFunc) -> JobFunc:
        f.__job__ = JobSpec(name or f.__name__, f, timeout, max_tries)  # type: ignore[attr-defined]
        return f
    return mark(function) if function is not None else mark


def cron_job(name: str, setting_key: str, *, timeout: float | None = None) -> Callable[[JobFunc], JobFunc]:
    """Mark ``async def f(ctx)`` to run on the schedule ``[jobs] <setting_key>``."""
    def mark(f: JobFunc) -> JobFunc:
        f.__cron__ = CronSpec(name, setting_key, f, timeout)  # type: ignore[attr-defined]
        return f
    return mark


def pruner(function: Callable[[AppContext], Awaitable[int]]) -> Callable[[AppContext], Awaitable[int]]:
    """Mark ``async def f(ctx) -> deleted count`` for the daily ``prune`` job."""
    function.__pruner__ = PrunerSpec(f"{function.__module__}.{function.__name__}", function)  # type: ignore[attr-defined]
    return function


@dataclass
class WorkerState:
    """Whether this process's worker was asked to stop (SIGTERM)."""

    stopping: bool = False


def is_stopping(ctx: AppContext) -> bool:
    """True once the worker was asked to stop: long jobs should hand over (raise Retry)."""
    return ctx.state(WorkerState).stopping


# -- enqueueing ------------------------------------------------------------------------

def queue(ctx: AppContext) -> ArqRedis:
    """An arq client on the context's own Redis connection pool (created once)."""
    return ctx.state(ArqRedis, lambda: ArqRedis(pool_or_conn=ctx.redis.connection_pool,
                                                default_queue_name=ctx.settings.jobs.queue_name))


async def enqueue(ctx: AppContext, name: str, *args: Any, _job_id: str | None = None,
                  _defer_by: float | None = None, _defer_until: datetime | None = None,
                  **kwargs: Any) -> Job | None:
    """Queue job ``name``; None when a job with ``_job_id`` is already queued or running.

    ``_defer_until`` is an instant of ``ctx.clock``; arq schedules on the wall clock,
    so it leaves here as a delay.
    """
    if name not in ctx.registry.jobs:
        raise ValueError(f"unknown job {name!r}: mark it @jobs.job and list it in its capability")
    if _defer_until is not None:
        _defer_by = max(0.0, (_defer_until - ctx.clock.now()).total_seconds())
        _defer_until = None
    return await queue(ctx).enqueue_job(name, *args, _job_id=_job_id, _defer_by=_defer_by,
                                        _defer_until=_defer_until, **kwargs)


async def job_exists(ctx: AppContext, job_ids: list[str]) -> dict[str, bool]:
    """Which of these job ids are queued or running (their arq job key exists)."""
    if not job_ids:
        return {}
    async with ctx.redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.exists(f"arq:job:{job_id}")
        found = await pipe.execute()
    return {job_id: bool(n) for job_id, n in zip(job_ids, found, strict=True)}


# -- running (worker side) ---------------------------------------------------------------

def _backoff(ctx: AppContext, job_try: int) -> float:
    return ctx.settings.jobs.retry_backoff_seconds * 2 ** (job_try - 1)


async def _record(ctx: AppContext, name: str, outcome: str, **details: Any) -> None:
    """Counts per job and the latest failures, for the management web; never raises."""
    try:
        async with ctx.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(COUNTS_KEY, f"{name}:{outcome}", 1)
            if outcome == "failed":
                entry = {"job": name, "at": time.time(), **details}
                pipe.lpush(FAILED_KEY, json.dumps(entry, ensure_ascii=False, default=str))
                pipe.ltrim(FAILED_KEY, 0, KEEP_FAILURES - 1)
            await pipe.execute()
    except TRANSIENT:
        pass


async def _running(ctx: AppContext, job_id: str | None, started: bool) -> None:
    """Which worker runs which job, so that a dead worker's jobs can be released."""
    if not job_id:
        return
    try:
        key = RUNNING_KEY + worker_id()
        if started:
            await ctx.redis.sadd(key, job_id)
        else:
            await ctx.redis.srem(key, job_id)
    except TRANSIENT:
        pass


def _arq_function(name: str, target: JobFunc, max_tries: int) -> JobFunc:
    """arq calls ``f(arq_ctx, *args)``; our jobs want the AppContext and transient retries."""
    async def run(arq_ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        app: AppContext = arq_ctx["app"]
        job_try = arq_ctx.get("job_try", 1)
        job_id = arq_ctx.get("job_id")
        token = current_job_id.set(job_id)
        await _running(app, job_id, True)
        try:
            result = await target(app, *args, **kwargs)
        except Retry:
            await _record(app, name, "retried")
            raise
        except TRANSIENT as exc:
            if job_try < max_tries:
                await _record(app, name, "retried")
                log.warning("job %s: %s unreachable, retrying", name, exc.__class__.__name__)
                raise Retry(defer=_backoff(app, job_try)) from exc
            await _record(app, name, "failed", id=arq_ctx.get("job_id"), tries=job_try,
                          error=f"{exc.__class__.__name__}: {exc}")
            raise
        except Exception as exc:
            await _record(app, name, "failed", id=arq_ctx.get("job_id"), tries=job_try,
                          error=f"{exc.__class__.__name__}: {exc}")
            raise
        finally:
            current_job_id.reset(token)
            await _running(app, job_id, False)
        await _record(app, name, "done")
        return result
    run.__qualname__ = run.__name__ = name
    return run


def functions(ctx: AppContext) -> list[Function]:
    default_tries = ctx.settings.jobs.max_tries
    return [func(_arq_function(spec.name, spec.func, spec.max_tries or default_tries),
                 name=spec.name, timeout=spec.timeout, max_tries=spec.max_tries or default_tries,
                 keep_result=0)
            for spec in ctx.registry.jobs.values()]


def cron_jobs(ctx: AppContext) -> list[CronJob]:
    found = []
    for spec in ctx.registry.crons.values():
        schedule = getattr(ctx.settings.jobs, spec.setting_key, None)
        if schedule is None:
            raise ConfigError(f"cron job {spec.name}: add its schedule [jobs] {spec.setting_key} "
                              "to config/default.toml")
        if not schedule.strip():
            continue  # disabled
        target = spec.func

        async def run(arq_ctx: dict[str, Any], _target: JobFunc = target, _name: str = spec.name) -> None:
            app: AppContext = arq_ctx["app"]
            try:
                await _target(app)
            except Exception as exc:
                await _record(app, _name, "failed", id=arq_ctx.get("job_id"),
                              error=f"{exc.__class__.__name__}: {exc}")
                raise
            await _record(app, _name, "done")
        run.__qualname__ = run.__name__ = spec.name
        found.append(cron(run, name=spec.name, timeout=spec.timeout, unique=True,
                          **parse_schedule(schedule, spec.setting_key)))
    return found


# -- schedules ------------------------------------------------------------------------

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12), ("weekday", 0, 7))
_WEEKDAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}


def parse_schedule(text: str, setting: str = "schedule") -> dict[str, Any]:
    """A cron expression ``minute hour day month weekday`` as arq's cron options.

    Each field is ``*``, ``*/n``, ``a``, ``a-b`` or a comma list of those;
    weekdays are 0-7 (0 and 7 Sunday) or ``mon``..``sun``. ``"0 8 * * *"`` is
    08:00 every day, ``"*/5 * * * *"`` every five minutes.
    """
    parts = text.split()
    if len(parts) != 5:
        raise ConfigError(f"[jobs] {setting}: expected 5 fields 'minute hour day month weekday', "
                          f"got {text!r}")
    options: dict[str, Any] = {"second": 0}
    for part, (name, low, high) in zip(parts, _FIELDS, strict=True):
        values = _parse_field(part, low, high, name, setting)
        if name == "weekday" and values is not None:
            # cron: 0/7 = Sunday; arq (Python): 0 = Monday.
            values = {(v - 1) % 7 for v in values}
        options[name] = values
    return options


def _parse_field(part: str, low: int, high: int, name: str, setting: str) -> set[int] | None:
    if part == "*":
        return None
    values: set[int] = set()
    for item in part.lower().split(","):
        step = 1
        if "/" in item:
            item, _, step_text = item.partition("/")
            step = _number(step_text, name, setting)
            if step < 1:
                raise ConfigError(f"[jobs] {setting}: bad step in {name} field {part!r}")
        if item == "*":
            start, end = low, high
        elif "-" in item:
            first, _, last = item.partition("-")
            start, end = _number(first, name, setting), _number(last, name, setting)
        else:
            start = _number(item, name, setting)
            end = high if step > 1 else start
        if not low <= start <= end <= high:
            raise ConfigError(f"[jobs] {setting}: {name} field {part!r} outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return values


def _number(text: str, name: str, setting: str) -> int:
    if name == "weekday" and text in _WEEKDAYS:
        return _WEEKDAYS[text]
    if not text.isdigit():
        raise ConfigError(f"[jobs] {setting}: {name} value {text!r} is not a number")
    return int(text)


# -- health -----------------------------------------------------------------------------

def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def heartbeat(ctx: AppContext, stats: dict[str, Any], ttl: int = 30) -> None:
    await ctx.redis.set(WORKER_KEY + worker_id(), json.dumps(stats, default=str), ex=max(1, ttl))


async def announce(ctx: AppContext, ttl: int) -> None:
    """A worker starts: list it (with a first heartbeat), so that if it dies its jobs are
    released (see below)."""
    me = worker_id()
    async with ctx.redis.pipeline(transaction=True) as pipe:
        pipe.set(WORKER_KEY + me, json.dumps({"id": me, "started": time.time()}), ex=max(1, ttl))
        pipe.sadd(WORKERS_KEY, me)
        await pipe.execute()


async def retire(ctx: AppContext) -> None:
    """A worker stops cleanly."""
    me = worker_id()
    async with ctx.redis.pipeline(transaction=True) as pipe:
        pipe.srem(WORKERS_KEY, me)
        pipe.delete(WORKER_KEY + me, RUNNING_KEY + me)
        await pipe.execute()


async def release_dead_workers(ctx: AppContext) -> int:
    """Jobs of workers whose heartbeat stopped: let another worker take them now.

    arq keeps a running job's ``in-progress`` key for the job timeout plus
    10 s, so a killed worker's job would wait that long (5 minutes by default);
    deleting the key lets the next poll start it again. A worker only seemed
    dead (a stalled heartbeat) is harmless: the jobs' own conditional claims
    keep two runs from doing the same work twice.
    """
    released = 0
    for member in await ctx.redis.smembers(WORKERS_KEY):
        worker = member.decode()
        if await ctx.redis.exists(WORKER_KEY + worker):
            continue
        job_ids = [j.decode() for j in await ctx.redis.smembers(RUNNING_KEY + worker)]
        async with ctx.redis.pipeline(transaction=True) as pipe:
            for job_id in job_ids:
                pipe.delete(f"arq:in-progress:{job_id}")
            pipe.delete(RUNNING_KEY + worker)
            pipe.srem(WORKERS_KEY, worker)
            await pipe.execute()
        released += len(job_ids)
        log.warning("worker %s is gone: released its %d jobs", worker, len(job_ids))
    return released


@dataclass
class QueueHealth:
    queued: int
    due: int
    deferred: int
    workers: list[dict[str, Any]]
    counts: dict[str, int]


async def queue_health(ctx: AppContext) -> QueueHealth:
    """What the management web shows: queue depth, live workers, job counts."""
    name = ctx.settings.jobs.queue_name
    now_ms = int(time.time() * 1000)
    async with ctx.redis.pipeline(transaction=False) as pipe:
        pipe.zcard(name)
        pipe.zcount(name, "-inf", now_ms)
        pipe.hgetall(COUNTS_KEY)
        queued, due, counts = await pipe.execute()
    workers = []
    for member in await ctx.redis.smembers(WORKERS_KEY):
        raw = await ctx.redis.get(WORKER_KEY + member.decode())
        if raw:
            workers.append(json.loads(raw))
    return QueueHealth(queued, due, queued - due, sorted(workers, key=lambda w: w.get("id", "")),
                       {k.decode(): int(v) for k, v in counts.items()})


async def recent_failures(ctx: AppContext, limit: int = 20) -> list[dict[str, Any]]:
    raw = await ctx.redis.lrange(FAILED_KEY, 0, limit - 1)
    return [json.loads(r) for r in raw]


# -- the schedules of the job machinery itself -----------------------------------------

@cron_job("worker_recovery", "worker_recovery")
async def worker_recovery(ctx: AppContext) -> int:
    return await release_dead_workers(ctx)


@cron_job("prune", "prune")
async def prune(ctx: AppContext) -> dict[str, int]:
    """Run every installed pruner; one failing does not stop the others."""
    deleted = {}
    for name, spec in ctx.registry.pruners.items():
        try:
            deleted[name] = await spec.func(ctx)
        except Exception:
            log.exception("pruner %s failed", name)
    log.info("pruned expired data", extra={"fields": deleted})
    return deleted


# The job machinery's own schedules, installed first wherever jobs run.
PLATFORM = Capability(name="platform", jobs=(worker_recovery, prune))
