"""Automatic pipelining of the callback's Redis commands (real Redis)."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.exceptions

from wxbackend.wechat.autopipe import AutoPipeline


async def test_concurrent_commands_share_round_trips_and_keep_their_results(ctx):
    pipe = AutoPipeline.of(ctx)
    sent = []
    original = pipe._send

    async def counting(batch):
        sent.append(len(batch))
        await original(batch)

    pipe._send = counting
    results = await asyncio.gather(*(
        pipe.run(("set", (f"wx:test:{i}", i), {"nx": True}), ("get", (f"wx:test:{i}",), {}))
        for i in range(50)))
    assert results == [[True, str(i).encode()] for i in range(50)]
    assert sum(sent) == 50 and len(sent) < 50  # fewer round trips than callers
    assert AutoPipeline.of(ctx) is pipe


async def test_an_error_reaches_only_its_own_caller(ctx):
    pipe = AutoPipeline.of(ctx)
    await ctx.redis.set("wx:test:text", "not a number")
    good, bad = await asyncio.gather(pipe.run(("incr", ("wx:test:n",), {})),
                                     pipe.run(("incr", ("wx:test:text",), {})),
                                     return_exceptions=True)
    assert good == [1]
    assert isinstance(bad, redis.exceptions.ResponseError)


async def test_commands_nobody_waits_for_are_sent_and_their_errors_logged(ctx, caplog):
    caplog.set_level(logging.WARNING, logger="wxbackend.wechat.autopipe")
    pipe = AutoPipeline.of(ctx)
    await ctx.redis.set("wx:test:text", "not a number")
    pipe.send(("set", ("wx:test:later", b"v"), {"ex": 60}))
    pipe.send(("incr", ("wx:test:text",), {}))
    await pipe.flush()
    assert await ctx.redis.get("wx:test:later") == b"v"
    assert [r.getMessage() for r in caplog.records] == ["redis command failed: value is not an integer or out of range"]


async def test_redis_down_fails_the_callers(ctx, servers, tmp_path):
    from tests.conftest import make_settings
    from wxbackend.context import AppContext
    from wxbackend.embedded import free_port

    broken = await AppContext.connect(make_settings(servers, tmp_path), servers.mongodb_uri,
                                      f"redis://127.0.0.1:{free_port()}/0", database=ctx.db.name)
    try:
        with pytest.raises(redis.exceptions.ConnectionError):
            await AutoPipeline.of(broken).run(("get", ("wx:test:x",), {}))
    finally:
        await broken.close()
