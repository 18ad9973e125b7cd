"""The job registry: schedules, registration, retries of transient failures, visible failures."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pymongo.errors import AutoReconnect

from tests.notifykit import drain
from wxbackend import jobs
from wxbackend.capability import Capability
from wxbackend.services import installed
from wxbackend.settings import ConfigError

ROOT = Path(__file__).resolve().parent.parent
RUNS: dict[str, int] = {}


@jobs.job(name="test_boom")
async def boom(ctx, what: str) -> None:
    RUNS[what] = RUNS.get(what, 0) + 1
    raise ValueError(f"broken {what}")


@jobs.job(name="test_flaky", max_tries=3)
async def flaky(ctx, what: str) -> str:
    RUNS[what] = RUNS.get(what, 0) + 1
    if RUNS[what] < 3:
        raise AutoReconnect("database restarting")
    return "ok"


@pytest.mark.parametrize("text, expected", [
    ("0 8 * * *", {"minute": {0}, "hour": {8}, "day": None, "month": None, "weekday": None}),
    ("*/20 * * * *", {"minute": {0, 20, 40}, "hour": None}),
    ("30 3 1,15 * *", {"minute": {30}, "hour": {3}, "day": {1, 15}}),
    ("0 9 * * mon-fri", {"weekday": {0, 1, 2, 3, 4}}),
    ("0 9 * * 0,7", {"weekday": {6}}),
])
def test_schedules_read_like_cron(text, expected):
    parsed = jobs.parse_schedule(text)
    assert {k: parsed[k] for k in expected} == expected and parsed["second"] == 0


@pytest.mark.parametrize("text", ["0 8 * *", "61 * * * *", "* 24 * * *", "*/0 * * * *", "a * * * *"])
def test_a_bad_schedule_names_the_setting(text):
    with pytest.raises(ConfigError) as caught:
        jobs.parse_schedule(text, "prune")
    assert "[jobs] prune" in str(caught.value)


@pytest.fixture
def extra_capabilities():
    return (Capability("test_jobs", jobs=(boom, flaky)),)


def test_the_installed_capabilities_declare_every_job_the_code_enqueues(settings):
    registry = installed.registry(settings)
    source = "\n".join(p.read_text() for p in (ROOT / "wxbackend").rglob("*.py"))
    enqueued = set(re.findall(r'jobs\.enqueue\(\s*ctx,\s*"(\w+)"', source))
    assert {"deliver", "notice_fanout", "digest_users", "late_reply"} <= enqueued
    assert enqueued <= set(registry.jobs)
    assert {"meeting_reminders", "secretary_digest", "outbox_recovery", "prune"} <= set(registry.crons)
    assert [c.setting_key for c in registry.crons.values() if not hasattr(settings.jobs, c.setting_key)] == []


def test_a_job_declared_twice_is_refused(settings):
    with pytest.raises(ValueError, match="test_boom"):
        installed.registry(settings, Capability("a", jobs=(boom,)), Capability("b", jobs=(boom_again,)))


@jobs.job(name="test_boom")
async def boom_again(ctx, what: str) -> None:
    raise AssertionError("never runs")


async def test_a_cron_job_without_its_setting_stops_the_worker(ctx):
    @jobs.cron_job("test_orphan", "no_such_schedule")
    async def orphan(ctx) -> None:
        raise AssertionError("never runs")

    ctx.registry = installed.registry(ctx.settings, Capability("orphans", jobs=(orphan,)))
    with pytest.raises(ConfigError, match="no_such_schedule"):
        jobs.cron_jobs(ctx)


async def test_failures_are_kept_and_transient_ones_retried(ctx):
    ctx.settings.jobs.retry_backoff_seconds = 0.05
    RUNS.clear()
    await jobs.enqueue(ctx, "test_boom", "a", _job_id="boom:a")
    await jobs.enqueue(ctx, "test_flaky", "b")
    assert await jobs.enqueue(ctx, "test_boom", "a", _job_id="boom:a") is None  # queued already
    with pytest.raises(ValueError):
        await jobs.enqueue(ctx, "no_such_job")
    await drain(ctx)
    assert RUNS == {"a": 1, "b": 3}  # a failure is final; a database outage is retried
    [failure] = await jobs.recent_failures(ctx)
    assert (failure["job"], failure["id"], failure["error"]) == ("test_boom", "boom:a", "ValueError: broken a")
    health = await jobs.queue_health(ctx)
    assert health.counts["test_boom:failed"] == 1 and health.counts["test_flaky:retried"] == 2
    assert health.counts["test_flaky:done"] == 1 and health.queued == 0


async def test_a_dead_workers_jobs_are_released(ctx):
    ctx.settings.jobs.queue_name = "wxb:queue"
    await ctx.redis.sadd(jobs.WORKERS_KEY, "gone:1", "alive:2")
    await ctx.redis.set(jobs.WORKER_KEY + "alive:2", "{}", ex=30)
    await ctx.redis.sadd(jobs.RUNNING_KEY + "gone:1", "deliver:x")
    await ctx.redis.sadd(jobs.RUNNING_KEY + "alive:2", "deliver:y")
    await ctx.redis.set("arq:in-progress:deliver:x", b"1", ex=300)
    await ctx.redis.set("arq:in-progress:deliver:y", b"1", ex=300)
    assert await jobs.release_dead_workers(ctx) == 1
    assert not await ctx.redis.exists("arq:in-progress:deliver:x")
    assert await ctx.redis.exists("arq:in-progress:deliver:y")
    assert await ctx.redis.smembers(jobs.WORKERS_KEY) == {b"alive:2"}
