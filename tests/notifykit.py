"""Helpers of the notification tests: members who follow, an in-process worker, the outbox.

::

    people = await followers(ctx, city, sandbox, 5)          # bound, following, known to the sandbox
    result = await notify(ctx, [Recipient(member_id=p["_id"]) for p in people], "notice", data, subject="s")
    await drain(ctx)                                          # an arq worker in burst mode
    assert len(await sandbox.outbox(kind="template")) == 5
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from arq.connections import ArqRedis

from models import members as members_model
from models import notifications as outbox_model
from tests.conftest import SYSTEM, City
from tests.factories import member_fields
from tests.wechat_fixtures import Sandbox, use_test_credentials
from wxbackend.context import AppContext
from wxbackend.embedded import free_port
from wxbackend.services import orgs
from wxbackend.services.orgs import members
from wxbackend.wechat.sandbox import SandboxConfig, make_sandbox_app
from wxbackend.worker import build_worker, settings_environ

OA_TEMPLATE = "TPL_NOTICE_OA"
MP_TEMPLATE = "TPL_NOTICE_MP"


def use_templates(ctx: AppContext, *, oa: bool = True, mp: bool = True) -> None:
    """Template ids for the notice and digest kinds (the sandbox accepts any)."""
    notify = ctx.settings.notify
    notify.notice_oa_template_id = OA_TEMPLATE if oa else ""
    notify.notice_mp_template_id = MP_TEMPLATE if mp else ""
    notify.digest_oa_template_id = "TPL_DIGEST_OA" if oa else ""
    # Tests wait fractions of a second, not minutes.
    notify.retry_backoff_seconds = 0.05
    notify.oa_template_rate = notify.mp_subscribe_rate = 1000.0
    ctx.settings.jobs.retry_backoff_seconds = 0.05


async def new_members(ctx: AppContext, org_id: Any, n: int, prefix: str = "党员") -> list[dict[str, Any]]:
    found = []
    for i in range(n):
        found.append(await members.create(ctx, SYSTEM, org_id, member_fields(f"{prefix}{i:03d}")))
    return found


async def followers(ctx: AppContext, org_id: Any, sandbox: Any, n: int, prefix: str = "关注") -> list[dict]:
    """Members bound to the official account who follow it, known to the sandbox."""
    people = await new_members(ctx, org_id, n, prefix)
    updates = []
    for i, person in enumerate(people):
        openid = f"oF{prefix.encode().hex()[:8]}{i:04d}"
        person.update(oa_openid=openid, oa_following=True)
        updates.append((person["_id"], {"oa_openid": openid, "oa_following": True}))
        if sandbox is not None:
            await sandbox.follow(openid)
    await members_model.bulk_update(ctx.db, updates)
    return people


async def drain(ctx: AppContext, timeout: float = 20.0, horizon: float = 1.0) -> Any:
    """Run an in-process worker until no job is running and none is due within ``horizon``
    seconds (jobs deferred further, e.g. to the end of a quota pause, stay queued)."""
    pool = ArqRedis(pool_or_conn=ctx.redis.connection_pool,
                    default_queue_name=ctx.settings.jobs.queue_name)
    worker = build_worker(ctx, pool, burst=False, cron=False, poll_seconds=0.02)
    task = asyncio.ensure_future(worker.async_run())
    deadline = asyncio.get_running_loop().time() + timeout
    quiet = 0
    try:
        while quiet < 3:
            assert asyncio.get_running_loop().time() < deadline, "the queue did not drain"
            await asyncio.sleep(0.05)
            soon = await ctx.redis.zcount(ctx.settings.jobs.queue_name, "-inf",
                                          int((time.time() + horizon) * 1000))
            quiet = quiet + 1 if soon == 0 and not worker.tasks else 0
    finally:
        # Stop at the next poll rather than by cancelling: on Python 3.11 a cancellation
        # can be lost inside redis-py's asyncio.wait_for, and the worker would poll on.
        worker.burst, worker.max_burst_jobs = True, 0
        try:
            await asyncio.wait_for(asyncio.shield(task), 5)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for job in list(worker.tasks.values()):  # a failed drain must not leave jobs running
            job.cancel()
        await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
    return worker


async def statuses(ctx: AppContext, ids: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for doc in await outbox_model.by_ids(ctx.db, list(ids)):
        counts[doc["status"]] = counts.get(doc["status"], 0) + 1
    return counts


async def queued_jobs(ctx: AppContext) -> int:
    return await ctx.redis.zcard(ctx.settings.jobs.queue_name)


async def small_city(ctx: AppContext) -> City:
    """The conftest city's organisations without its users (argon2 hashing costs seconds)."""
    root = await orgs.create(ctx, SYSTEM, None, name="中共示范市委员会", org_type="committee",
                             category="organ", code="ROOT")
    da = await orgs.create(ctx, SYSTEM, root["_id"], name="东区区委", org_type="committee",
                           category="organ", code="DA")
    db_ = await orgs.create(ctx, SYSTEM, root["_id"], name="西区区委", org_type="committee",
                            category="organ", code="DB")
    a1 = await orgs.create(ctx, SYSTEM, da["_id"], name="东区第一党支部", org_type="branch",
                           category="community", code="A1")
    a2 = await orgs.create(ctx, SYSTEM, da["_id"], name="东区第二党支部", org_type="branch",
                           category="organ", code="A2")
    b1 = await orgs.create(ctx, SYSTEM, db_["_id"], name="西区第一党支部", org_type="branch",
                           category="school", code="B1")
    return City(root, da, db_, a1, a2, b1, {})


# -- worker subprocesses -------------------------------------------------------------------

def worker_env(ctx: AppContext, **overrides: str) -> dict[str, str]:
    """The environment of a ``python -m wxbackend worker`` that sees what ``ctx`` sees.

    The schedules are off: the tests call recovery themselves, at known moments. The
    worker's clock runs with the test's offset, so both see the same date.
    """
    return {**os.environ, **settings_environ(ctx.settings), "WXB_MONGODB_DATABASE": ctx.db.name,
            "WXB_CLOCK_OFFSET_SECONDS": repr(ctx.clock.offset.total_seconds()),
            "WXB_JOBS_WORKER_RECOVERY": "", "WXB_JOBS_OUTBOX_RECOVERY": "",
            "WXB_JOBS_SECRETARY_DIGEST": "", "WXB_JOBS_PRUNE": "", "WXB_LOG_FORMAT": "text",
            **overrides}


def spawn_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with log_path.open("ab") as log:
        return subprocess.Popen([sys.executable, "-m", "wxbackend", "worker"], env=env,
                                stdout=log, stderr=log, stdin=subprocess.DEVNULL)


async def wait_for(check: Any, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def own_sandbox(settings: Any) -> Any:
    """A sandbox for settings that are not the ``settings`` fixture's (own servers)."""
    use_test_credentials(settings)
    app = make_sandbox_app(SandboxConfig.from_settings(settings, mode="safe"))
    port = free_port()
    server = app.listen(port, "127.0.0.1")
    url = f"http://127.0.0.1:{port}"
    settings.wechat.api_base = settings.wechat.oauth_base = settings.wechat.qrcode_image_base = url
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            yield Sandbox(url, app, http)
    finally:
        server.stop()
        await server.close_all_connections()
