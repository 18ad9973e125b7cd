"""``python -m wxbackend worker``: an arq worker for the background jobs.

Any number of workers may run, on any number of machines, against the same
Redis and MongoDB: the queue hands each job to one of them, cron jobs run once
per tick (``wxbackend.jobs``), and the notification outbox decides what was
sent. In embedded mode the worker uses the servers that ``serve`` started
(``<data dir>/embedded.json``); in production it uses ``WXB_MONGODB_URI`` and
``WXB_REDIS_URL``::

    python -m wxbackend worker            # until SIGTERM / Ctrl-C
    python -m wxbackend worker --burst    # run what is due, then exit

SIGTERM or Ctrl-C: the worker takes no new job, lets running jobs finish for
``[jobs] stop_grace_seconds`` (a delivery job hands its unsent notifications
back at the next group), then exits. ``serve --demo`` starts one worker as a
subprocess (:func:`start_demo_worker`) and stops it on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from wxbackend.settings import Settings, env_name

if TYPE_CHECKING:  # the CLI imports this module; arq and the services load when a worker runs
    from arq.connections import ArqRedis
    from arq.worker import Worker

    from wxbackend.context import AppContext

log = logging.getLogger("wxbackend.worker")
# How long ``serve --demo`` waits for its worker to stop (above [jobs] stop_grace_seconds).
STOP_SECONDS = 25.0


def add_parser(sub: Any) -> None:
    worker = sub.add_parser("worker", help="run background jobs (notifications, schedules)",
                            description="Run an arq worker: delivers notifications and runs the "
                            "scheduled jobs. Start as many as needed, on any machine.")
    worker.add_argument("--burst", action="store_true", help="run the jobs due now, then exit")
    worker.add_argument("--max-jobs", type=int, help="jobs at once (default: [jobs] max_jobs)")


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    if args.max_jobs:
        settings.jobs.max_jobs = args.max_jobs
    asyncio.run(run(settings, burst=args.burst))
    return 0


def build_worker(ctx: AppContext, pool: ArqRedis, *, burst: bool = False, cron: bool = True,
                 handle_signals: bool = False, poll_seconds: float | None = None) -> Worker:
    """An arq worker running our jobs with ``ctx``; tests run it in-process with ``burst``
    (and without the schedules, ``cron=False``, which they call directly)."""
    from arq.worker import Worker

    from wxbackend import jobs
    from wxbackend.clock import SHANGHAI

    settings = ctx.settings.jobs
    return Worker(functions=jobs.functions(ctx), cron_jobs=jobs.cron_jobs(ctx) if cron else [],
                  queue_name=settings.queue_name, redis_pool=pool, burst=burst,
                  handle_signals=handle_signals, ctx={"app": ctx},
                  max_jobs=settings.max_jobs, job_timeout=settings.job_timeout_seconds,
                  poll_delay=poll_seconds if poll_seconds is not None else settings.poll_seconds,
                  max_tries=settings.max_tries, keep_result=0,
                  job_completion_wait=int(settings.stop_grace_seconds),
                  health_check_interval=60, timezone=SHANGHAI)


async def run(settings: Settings, *, burst: bool = False) -> None:
    from arq.connections import RedisSettings, create_pool

    from wxbackend import jobs
    from wxbackend.runtime import open_runtime
    from wxbackend.services import installed

    async with open_runtime(settings, installed.registry(settings)) as rt:
        pool = await create_pool(RedisSettings.from_dsn(rt.redis_url),
                                 default_queue_name=settings.jobs.queue_name)
        worker = build_worker(rt.ctx, pool, burst=burst)
        _install_stop(worker, rt.ctx)
        await jobs.announce(rt.ctx, int(settings.jobs.heartbeat_seconds * 3))
        beat = asyncio.ensure_future(_heartbeats(worker, rt.ctx))
        log.info("worker started", extra={"fields": {"id": jobs.worker_id(), "burst": burst,
                                                     "jobs": sorted(rt.ctx.registry.jobs),
                                                     "cron": sorted(rt.ctx.registry.crons)}})
        try:
            await worker.async_run()
        except asyncio.CancelledError:
            pass
        finally:
            beat.cancel()
            await worker.close()
            with contextlib.suppress(Exception):
                await jobs.retire(rt.ctx)
        log.info("worker stopped", extra={"fields": {"complete": worker.jobs_complete,
                                                     "failed": worker.jobs_failed}})


def _install_stop(worker: Worker, ctx: AppContext) -> None:
    """SIGTERM/SIGINT: flag running jobs to hand over, take no new ones, then stop."""
    from wxbackend import jobs

    loop = asyncio.get_running_loop()

    def stop(sig: signal.Signals) -> None:
        state = ctx.state(jobs.WorkerState)
        if state.stopping:
            return
        state.stopping = True
        # Leave the poll loop at its next turn as well as by arq's cancellation, which
        # Python 3.11 can lose inside redis-py's asyncio.wait_for.
        worker.burst, worker.max_burst_jobs = True, 0
        worker.handle_sig_wait_for_completion(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig)


async def _heartbeats(worker: Worker, ctx: AppContext) -> None:
    from wxbackend import jobs

    started = time.time()
    every = ctx.settings.jobs.heartbeat_seconds
    while True:
        with contextlib.suppress(Exception):  # Redis down: the next beat will tell
            await jobs.heartbeat(ctx, {
                "id": jobs.worker_id(), "started": started, "at": time.time(),
                "complete": worker.jobs_complete, "failed": worker.jobs_failed,
                "retried": worker.jobs_retried, "running": len(worker.tasks)}, ttl=int(every * 3))
        await asyncio.sleep(every)


# -- the demo's worker ---------------------------------------------------------------------

def settings_environ(settings: Settings) -> dict[str, str]:
    """Every effective setting as WXB_* variables, for a child process to see the same."""
    env = {}
    for section, values in settings.as_dict().items():
        for key, value in values.items():
            env[env_name(section, key)] = ("true" if value else "false") if isinstance(value, bool) \
                else str(value)
    return env


class DemoWorker:
    """A worker subprocess started by ``serve --demo``."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    async def stop(self) -> None:
        """SIGTERM, then wait in a thread: the loop keeps running, so the in-process
        sandbox still answers the worker's last sends. SIGKILL after 25 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.proc.wait, STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_demo_worker(settings: Settings) -> DemoWorker:
    """One worker beside the demo server, with exactly the server's settings."""
    env = {**os.environ, **settings_environ(settings)}
    proc = subprocess.Popen([sys.executable, "-m", "wxbackend", "worker"], env=env,
                            stdin=subprocess.DEVNULL)
    print(f"worker: pid {proc.pid} (python -m wxbackend worker)", flush=True)
    return DemoWorker(proc)
