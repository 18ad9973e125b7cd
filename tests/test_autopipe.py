"""Automatic pipelining of the callback's Redis commands (real Redis, its own RESP connection)."""

from __future__ import annotations

import asyncio
import hashlib
import logging

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from wxbackend.autopipe import AutoPipeline, encode


def test_commands_are_encoded_as_resp_arrays_of_bulk_strings():
    assert encode(("SET", "k", b"\r\n", "EX", 60)) == (
        b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\r\n\r\n$2\r\nEX\r\n$2\r\n60\r\n")
    assert encode(("GET", "键")) == b"*2\r\n$3\r\nGET\r\n$3\r\n\xe9\x94\xae\r\n"


async def test_concurrent_commands_share_writes_and_keep_their_results(ctx):
    pipe = AutoPipeline.of(ctx)
    await pipe.run(("PING",))  # connected
    conn = pipe._conn
    writes = []
    original = conn.transport.write
    conn.transport.write = lambda data: (writes.append(data), original(data))
    results = await asyncio.gather(*(
        pipe.run(("SET", f"wx:test:{i}", i, "NX"), ("GET", f"wx:test:{i}"))
        for i in range(50)))
    assert results == [[b"OK", str(i).encode()] for i in range(50)]
    assert len(writes) == 1  # one write for the 100 commands of 50 callers
    assert AutoPipeline.of(ctx) is pipe


async def test_a_set_nx_that_loses_answers_none(ctx):
    pipe = AutoPipeline.of(ctx)
    first, second = await asyncio.gather(pipe.run(("SET", "wx:test:claim", b"P", "NX", "EX", 60)),
                                         pipe.run(("SET", "wx:test:claim", b"P", "NX", "EX", 60)))
    assert first == [b"OK"] and second == [None]
    assert 0 < await ctx.redis.ttl("wx:test:claim") <= 60


async def test_an_error_reaches_only_its_own_caller(ctx):
    pipe = AutoPipeline.of(ctx)
    await ctx.redis.set("wx:test:text", "not a number")
    good, bad, after = await asyncio.gather(pipe.run(("INCR", "wx:test:n")),
                                            pipe.run(("INCR", "wx:test:text")),
                                            pipe.run(("INCR", "wx:test:n")),
                                            return_exceptions=True)
    assert good == [1] and after == [2]
    assert isinstance(bad, redis.exceptions.ResponseError)


async def test_commands_nobody_waits_for_are_sent_and_their_errors_logged(ctx, caplog):
    caplog.set_level(logging.WARNING, logger="wxbackend.autopipe")
    pipe = AutoPipeline.of(ctx)
    await ctx.redis.set("wx:test:text", "not a number")
    pipe.send(("SET", "wx:test:later", b"v", "EX", 60))  # not connected yet: connects first
    await pipe.flush()
    pipe.send(("INCR", "wx:test:text"))
    await pipe.flush()
    assert await ctx.redis.get("wx:test:later") == b"v"
    assert [r.getMessage() for r in caplog.records] == [
        "redis command failed: ERR value is not an integer or out of range"]


async def test_a_reply_slower_than_the_timeout_fails_in_flight_commands_then_reconnects(ctx):
    pipe = AutoPipeline(ctx.redis, timeout=0.2)
    try:
        (first_id,) = await pipe.run(("CLIENT", "ID"))
        await ctx.redis.execute_command("CLIENT", "PAUSE", 600)  # Redis holds every reply 0.6 s
        with pytest.raises(redis.exceptions.TimeoutError):
            await pipe.run(("SET", "wx:test:slow", b"1"))
        await asyncio.sleep(0.6)
        # The late reply could not be told from the next one's: a fresh connection answers.
        assert await pipe.run(("SET", "wx:test:slow", b"2"), ("GET", "wx:test:slow")) == [b"OK", b"2"]
        (second_id,) = await pipe.run(("CLIENT", "ID"))
        assert second_id != first_id
    finally:
        await pipe.close()


async def test_a_busy_event_loop_is_not_taken_for_a_slow_redis(ctx):
    pipe = AutoPipeline(ctx.redis, timeout=0.2)
    try:
        await pipe.run(("PING",))
        pipe.send(("SET", "wx:test:busy", b"1"))
        import time
        time.sleep(0.3)  # the loop is blocked before the command is even written
        assert await pipe.run(("GET", "wx:test:busy")) == [b"1"]
    finally:
        await pipe.close()


async def test_a_killed_connection_fails_its_callers_and_the_next_command_reconnects(ctx):
    pipe = AutoPipeline.of(ctx)
    (client_id,) = await pipe.run(("CLIENT", "ID"))
    await ctx.redis.execute_command("CLIENT", "KILL", "ID", client_id)
    await asyncio.sleep(0.05)
    assert await pipe.run(("SET", "wx:test:again", b"1")) == [b"OK"]
    (new_id,) = await pipe.run(("CLIENT", "ID"))
    assert new_id != client_id


async def test_it_uses_the_database_and_user_of_the_redis_url(ctx, servers):
    await ctx.redis.execute_command("ACL", "SETUSER", "wxbpipe", "on", ">pipe-secret", "~*", "+@all")
    url = f"redis://wxbpipe:pipe-secret@127.0.0.1:{servers.redis.port}/5"
    client = aioredis.from_url(url)
    pipe = AutoPipeline(client)
    try:
        await pipe.run(("SET", "wx:test:db5", b"five"))
        assert await client.get("wx:test:db5") == b"five"
        assert await ctx.redis.get("wx:test:db5") is None  # not database 0
        (whoami,) = await pipe.run(("ACL", "WHOAMI"))
        assert whoami == b"wxbpipe"
    finally:
        await client.delete("wx:test:db5")
        await pipe.close()
        await client.aclose()
        await ctx.redis.execute_command("ACL", "DELUSER", "wxbpipe")


async def test_it_authenticates_with_the_password_of_the_redis_url(ctx, servers):
    # The embedded Redis requires a password: redis://:<password>@host:port/0, no user.
    assert servers.redis_url.startswith(f"redis://:{servers.redis_password}@")
    client = aioredis.from_url(servers.redis_url)
    pipe = AutoPipeline(client)
    try:
        assert await pipe.run(("ACL", "WHOAMI"), ("SET", "wx:test:auth", b"1")) == [b"default", b"OK"]
        assert await ctx.redis.get("wx:test:auth") == b"1"
    finally:
        await pipe.close()
        await client.aclose()


@pytest.mark.parametrize("credentials, error, refusal", [
    ("", redis.exceptions.ResponseError, "NOAUTH"),  # no AUTH sent: each command is refused
    (":not-the-password@", redis.exceptions.ConnectionError, "WRONGPASS"),  # the connect fails: 503
])
async def test_without_the_right_password_nothing_runs(ctx, servers, credentials, error, refusal):
    client = aioredis.from_url(f"redis://{credentials}127.0.0.1:{servers.redis.port}/0")
    pipe = AutoPipeline(client)
    try:
        with pytest.raises(error, match=refusal):
            await pipe.run(("SET", "wx:test:intruder", b"1"))
        assert await ctx.redis.exists("wx:test:intruder") == 0
    finally:
        await pipe.close()
        await client.aclose()


async def test_redis_down_fails_the_callers_at_once(ctx, servers, tmp_path):
    from tests.conftest import make_settings
    from wxbackend.context import AppContext
    from wxbackend.embedded import free_port

    broken = await AppContext.connect(make_settings(servers, tmp_path), servers.mongodb_uri,
                                      f"redis://127.0.0.1:{free_port()}/0", database=ctx.db.name)
    try:
        pipe = AutoPipeline.of(broken)
        with pytest.raises(redis.exceptions.ConnectionError):
            await pipe.run(("GET", "wx:test:x"))
        # Within the retry pause a second command does not even try to connect.
        with pytest.raises(redis.exceptions.ConnectionError, match="retrying shortly"):
            await pipe.run(("GET", "wx:test:x"))
    finally:
        await broken.close()


async def test_scripts_run_by_sha_and_their_text_is_sent_once(ctx):
    pipe = AutoPipeline.of(ctx)
    script = "return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}"
    await ctx.redis.script_flush()
    assert await pipe.eval(script, ["wx:test:script"], ["a"]) == [b"wx:test:script", b"a", 1]  # NOSCRIPT, EVAL
    assert (await ctx.redis.script_exists(hashlib.sha1(script.encode()).hexdigest())) == [True]  # noqa: S324
    assert await pipe.eval(script, ["wx:test:script"], ["b"]) == [b"wx:test:script", b"b", 2]
    with pytest.raises(redis.exceptions.ResponseError, match="oops"):
        await pipe.eval("return redis.error_reply('oops')", [], [])
