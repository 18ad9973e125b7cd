"""Nothing lost, nothing sent twice: a worker killed mid-batch, Redis restarted or emptied,
a claim left behind, a worker asked to stop, the token bucket's pace."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

import pytest

from models import ensure_indexes
from models import notifications as outbox_model
from tests.conftest import make_settings
from tests.notifykit import (
    drain,
    followers,
    own_sandbox,
    queued_jobs,
    small_city,
    spawn_worker,
    statuses,
    use_templates,
    wait_for,
    worker_env,
)
from wxbackend import jobs, tokenbucket
from wxbackend.context import AppContext
from wxbackend.embedded import EmbeddedServers
from wxbackend.services import installed, notify
from wxbackend.services.notify import Recipient, notify_delivery


async def notice(ctx, people, subject="notice:1"):
    data = {"title": "学习通知", "org": "东区区委", "sent_at": ctx.clock.now(), "notice_id": "n1",
            "excerpt": "请按时参加"}
    return await notify.notify(ctx, [Recipient(member_id=p["_id"]) for p in people], "notice", data,
                               subject=subject)


def once_each(messages, people) -> bool:
    got = Counter(m["openid"] for m in messages)
    return got == Counter(p["oa_openid"] for p in people)


async def test_a_worker_killed_mid_batch_loses_nothing_and_sends_nothing_twice(ctx, sandbox, tmp_path):
    town = await small_city(ctx)
    use_templates(ctx)
    s = ctx.settings
    # 10 go at once (a 5 s burst at 2/s), then the worker waits 5 s for the next 10:
    # that is when it is killed, in the middle of its batch of 25.
    s.notify.oa_template_rate, s.notify.burst_seconds, s.notify.send_group = 2.0, 5.0, 10
    s.jobs.heartbeat_seconds = 0.5
    people = await followers(ctx, town.org("branch_a1"), sandbox, 25)
    result = await notice(ctx, people)
    assert result.queued == 25 and await queued_jobs(ctx) == 1

    async def counts() -> dict[str, int]:
        return await statuses(ctx, result.ids)

    first = spawn_worker(worker_env(ctx), tmp_path / "worker-1.log")
    try:
        await wait_for(lambda: _is(counts, {"sent": 10, "queued": 15}), what="the first group")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert await counts() == {"sent": 10, "queued": 15}
    assert len(await sandbox.outbox()) == 10

    # arq still holds the dead worker's job "in progress"; once its heartbeat lapses the
    # recovery releases it, and a new worker takes it up at once.
    await asyncio.sleep(1.2)
    assert await jobs.release_dead_workers(ctx) == 1
    await ctx.redis.delete(*[k async for k in ctx.redis.scan_iter(match="notify:bucket:*")])
    s.notify.oa_template_rate = 1000.0
    second = spawn_worker(worker_env(ctx), tmp_path / "worker-2.log")
    try:
        await wait_for(lambda: _is(counts, {"sent": 25}), what="the rest of the batch")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(20)
    assert second.returncode == 0
    assert once_each(await sandbox.outbox(kind="template"), people)
    assert await ctx.db["notify_batches"].count_documents({"due_at": {"$gt": datetime(2000, 1, 1, tzinfo=UTC)}}) == 0


async def _is(read, expected) -> bool:
    return await read() == expected


async def test_redis_restarted_with_jobs_pending_then_emptied(tmp_path):
    servers = EmbeddedServers(tmp_path / "own").start()
    settings = make_settings(servers, tmp_path)
    ctx = await AppContext.connect(settings, servers.mongodb_uri, servers.redis_url,
                                   database=f"t_{uuid.uuid4().hex[:12]}", registry=installed.registry(settings))
    try:
        await ensure_indexes(ctx.db, ctx.registry.models)
        use_templates(ctx)
        ctx.settings.notify.recovery_grace_seconds = 0
        async with own_sandbox(settings) as sandbox:
            town = await small_city(ctx)
            people = await followers(ctx, town.org("branch_a1"), sandbox, 6)
            first = await notice(ctx, people, "notice:1")
            await asyncio.sleep(1.5)  # appendfsync everysec: the jobs are on disk
            await _restart_redis(ctx, servers)
            assert await queued_jobs(ctx) == 1  # redis-server replayed its append-only file
            await drain(ctx)
            assert await statuses(ctx, first.ids) == {"sent": 6}

            second = await notice(ctx, people, "notice:2")
            await _restart_redis(ctx, servers, lose_data=True)
            assert await queued_jobs(ctx) == 0  # the jobs are gone; the outbox knows better
            report = await notify_delivery.recover(ctx)
            assert report["reenqueued"] == 1
            await drain(ctx)
            assert await statuses(ctx, second.ids) == {"sent": 6}
            messages = await sandbox.outbox(kind="template")
            assert once_each([m for m in messages if m["time"]], people * 2)
            assert len(messages) == 12
    finally:
        await ctx.mongo.drop_database(ctx.db.name)
        await ctx.close()
        servers.stop()


async def _restart_redis(ctx, servers, lose_data: bool = False) -> None:
    servers.redis.kill()
    if lose_data:
        for path in (servers.data_dir / "redis").glob("appendonly*"):
            path.unlink()
    servers.redis.start()
    for _ in range(100):
        try:
            await ctx.redis.ping()
            return
        except Exception:  # the pool reconnects
            await asyncio.sleep(0.1)
    raise AssertionError("redis did not come back")


async def test_a_claim_left_by_a_dead_worker_is_sent_again_after_its_lease(ctx, sandbox):
    town = await small_city(ctx)
    use_templates(ctx)
    people = await followers(ctx, town.org("branch_a1"), sandbox, 3)
    result = await notice(ctx, people)
    # What a worker killed between claiming and settling leaves: its claims, with their lease.
    for doc_id in result.ids:
        await ctx.redis.set(notify_delivery.CLAIM_KEY + str(doc_id), "dead-worker", px=1500)
    started = time.monotonic()
    await drain(ctx, horizon=3)
    assert await statuses(ctx, result.ids) == {"sent": 3}
    assert time.monotonic() - started >= 1.4  # not before the lease ran out
    doc = await outbox_model.get(ctx.db, result.ids[0])
    assert doc["attempts"] == 1
    assert len(await sandbox.outbox(kind="template")) == 3
    assert not await ctx.redis.exists(*[notify_delivery.CLAIM_KEY + str(i) for i in result.ids])


async def test_a_stopping_worker_hands_its_batch_back(ctx, sandbox):
    town = await small_city(ctx)
    use_templates(ctx)
    people = await followers(ctx, town.org("branch_a1"), sandbox, 3)
    result = await notice(ctx, people)
    ctx.state(jobs.WorkerState).stopping = True
    await drain(ctx, horizon=0.5)
    assert await statuses(ctx, result.ids) == {"queued": 3}
    assert await queued_jobs(ctx) == 1  # Retry: the same job, a second later
    ctx.state(jobs.WorkerState).stopping = False
    await drain(ctx, horizon=2)
    assert await statuses(ctx, result.ids) == {"sent": 3}


async def test_the_token_bucket_keeps_the_rate_across_callers(ctx):
    key = "notify:bucket:test"
    rate, n = 50.0, 40

    async def caller() -> float:
        wait = await tokenbucket.reserve(ctx.redis, key, rate=rate, burst_seconds=0.1, n=1)
        await asyncio.sleep(wait)
        return time.monotonic()

    started = time.monotonic()
    done = await asyncio.gather(*(caller() for _ in range(n)))
    elapsed = max(done) - started
    # 5 tokens of burst, then 35 at 50/s: 0.7 s.
    assert 0.6 <= elapsed <= 1.2, elapsed
    with pytest.raises(ValueError):
        await tokenbucket.reserve(ctx.redis, key, rate=0, burst_seconds=1)
