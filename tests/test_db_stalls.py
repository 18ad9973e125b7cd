"""A busy database makes requests slow, never failed (issue 19: stalls are slowness, not failure).

SecantusDB keeps its storage behind one lock and runs in one Python interpreter, so it
stalls in two ways, and the server must wait out both:

- an index build holds the storage lock: every read waits for the build, but the
  server's ``hello`` does not, so the driver's monitor stays content (measured: hellos
  answered within 0.15 s during a 30 s build);
- an operation that keeps the interpreter busy (here heavy regexes back to back) holds
  back every reply, the monitor's streamed ``hello`` included, and SecantusDB counts the
  time it holds a ``hello`` in poll slices, so the reply comes that much later. With the
  client of before (connectTimeoutMS 2000: 2 s of grace past the 10 s hold) the monitor
  then marked the server unknown, emptied the pool and cancelled the requests in flight:
  503s (and /healthz said "down"). A client whose own event loop is busy for seconds (the
  seed building its batches: up to 2.5 s measured) reads the reply late, to the same effect.

The settings and why: config/default.toml, [mongodb].
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient

from tests.conftest import ADMIN_PASSWORD
from tests.webclient import WebClient
from wxbackend.context import mongo_client_options
from wxbackend.embedded import is_local_uri
from wxbackend.settings import ConfigError, load_settings

# A catastrophic-backtracking pattern: one re.search over "a" * n takes ~n**4.2 steps,
# all in one C call that holds the interpreter (Python's re never lets go of the GIL).
HEAVY_PATTERN = "^a*a*a*a*c"
CHUNK_SECONDS = 2.5    # one heavy query
FREEZE_SECONDS = 13.0  # heavy queries back to back: past the 12 s the old client allowed
PRODUCTION_KEYS = {"WXB_SECURITY_SECRET_KEY": "s" * 40,
                   "WXB_SECURITY_FIELD_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}


@pytest.fixture
async def busy(servers, ctx):
    """A second client of the session's SecantusDB that makes the stalls, in the test's
    database (dropped with it). Its own monitor waits minutes; the app's is under test."""
    client = AsyncMongoClient(servers.mongodb_uri, connectTimeoutMS=300_000, socketTimeoutMS=None)
    try:
        yield client[ctx.db.name]
    finally:
        await client.close()


async def _timed(web: WebClient, url: str) -> tuple[str, float, object]:
    started = time.perf_counter()
    response = await web.get(url)
    return url, time.perf_counter() - started, response


async def requests_during(stall: Awaitable[float], web: WebClient, page: str) -> tuple[float, list]:
    """Run ``stall`` while GET /healthz and GET ``page`` go out every half second, each
    without waiting for the ones before: (the stall's seconds, [(url, seconds, response)])."""
    task = asyncio.ensure_future(stall)
    sent = []
    while not task.done():
        sent += [asyncio.create_task(_timed(web, "/healthz")), asyncio.create_task(_timed(web, page))]
        await asyncio.wait([task], timeout=0.5)
    return task.result(), await asyncio.gather(*sent)


def assert_all_served(answers: list, page: str, org_name: str) -> list[str]:
    """Every page came (200, the organisation's name), no 5xx anywhere; the /healthz states."""
    failures = [(url, r.status_code, round(elapsed, 1), r.text if url == "/healthz" else "")
                for url, elapsed, r in answers if r.status_code != 200]
    assert not failures, f"{len(failures)} of {len(answers)} requests failed: {failures}"
    pages = [r for url, _, r in answers if url == page]
    assert pages and all(org_name in r.text for r in pages)
    states = [r.json()["mongo"] for url, _, r in answers if url == "/healthz"]
    assert set(states) <= {"ok", "slow"}, states  # never "down": slowness is not an outage
    return states


async def test_requests_wait_out_an_index_build(ctx, city, web, busy):
    """~70,000 index keys: seconds under the storage lock, which every read waits for."""
    coll = busy["stall_index"]
    ancestors = [ObjectId() for _ in range(40)]
    docs = [{"org_ancestors": [ancestors[(i + k) % 40] for k in range(10)], "month": f"2026-{i % 12 + 1:02d}"}
            for i in range(7000)]
    for start in range(0, len(docs), 1000):
        await coll.insert_many(docs[start:start + 1000], ordered=False)
    await web.login("east", ADMIN_PASSWORD)
    page = f"/admin/orgs/{city.org('district_a')}"
    assert (await web.get(page)).status_code == 200

    async def build() -> float:
        started = time.perf_counter()
        await coll.create_index([("org_ancestors", 1), ("month", 1)])
        return time.perf_counter() - started

    seconds, answers = await requests_during(build(), web, page)
    assert seconds > 2.0, f"the build took {seconds:.1f} s: too short to show anything"
    assert_all_served(answers, page, city.district_a["name"])
    waited = max(elapsed for url, elapsed, _ in answers if url == page)
    assert waited > 1.0, "the pages did not wait for the build: it did not hold the storage lock"


async def _calibrated_length(coll, seconds: float) -> int:
    """The subject length for which HEAVY_PATTERN keeps this server busy about ``seconds``."""
    await coll.insert_one({"_id": "probe", "s": "a" * 200})
    started = time.perf_counter()
    assert await coll.find_one({"_id": "probe", "s": {"$regex": HEAVY_PATTERN}}) is None
    took = max(time.perf_counter() - started, 0.01)
    return min(900, max(200, round(200 * (seconds / took) ** (1 / 4.2))))


async def freeze(coll, at_least: float) -> float:
    """Keep the server's interpreter busy for ``at_least`` seconds (a little more): heavy
    queries back to back, the next one always queued behind the running one, so the
    server gets no breath between them. Returns how long it was busy."""
    async def heavy() -> None:
        await coll.find_one({"_id": "probe", "s": {"$regex": HEAVY_PATTERN}})

    started = time.perf_counter()
    queue = [asyncio.create_task(heavy()), asyncio.create_task(heavy())]
    while time.perf_counter() - started < at_least:
        await queue.pop(0)
        queue.append(asyncio.create_task(heavy()))
    await asyncio.gather(*queue)
    return time.perf_counter() - started


async def test_requests_wait_out_a_frozen_database(ctx, city, web, busy):
    """The interpreter busy for longer than the old client allowed a heartbeat (2 s past
    the 10 s hold: 12 s), so the old client's failure fell inside the freeze, requests in
    flight; no reply at all meanwhile, the monitor's included."""
    coll = busy["stall_freeze"]
    length = await _calibrated_length(coll, CHUNK_SECONDS)
    await coll.update_one({"_id": "probe"}, {"$set": {"s": "a" * length}})
    await web.login("east", ADMIN_PASSWORD)
    page = f"/admin/orgs/{city.org('district_a')}"
    assert (await web.get(page)).status_code == 200
    assert ctx.mongo.topology_description.has_writable_server()

    _, answers = await requests_during(freeze(coll, FREEZE_SECONDS), web, page)
    states = assert_all_served(answers, page, city.district_a["name"])
    assert "slow" in states  # /healthz saw the ping go unanswered, and said so without a 503
    waited = max(elapsed for url, elapsed, _ in answers if url == page)
    assert waited > 5.0  # the pages asked at the start waited for the server to come back
    # The driver never gave up on the server: still known, and answering at once.
    assert ctx.mongo.topology_description.has_writable_server()
    health = await web.get("/healthz")
    assert health.status_code == 200 and health.json() == {"mongo": "ok", "redis": "ok"}


def test_client_options_embedded_and_production(tmp_path):
    embedded = load_settings(environ={"WXB_DATA_DIR": str(tmp_path)})
    assert embedded.embedded_mongo
    options = mongo_client_options(embedded, "mongodb://127.0.0.1:40000/?retryWrites=false")
    assert options == {"serverSelectionTimeoutMS": 2000, "connectTimeoutMS": 30000,
                       "socketTimeoutMS": None, "heartbeatFrequencyMS": 10000,
                       "maxIdleTimeMS": 240000, "serverMonitoringMode": "stream"}
    # SecantusDB drops connections idle for 300 s: the driver must retire them first.
    assert options["maxIdleTimeMS"] < 300_000

    remote = "mongodb://db1.example.cn,db2.example.cn/?replicaSet=rs0"
    production = load_settings(environ={"WXB_DATA_DIR": str(tmp_path), "WXB_MONGODB_URI": remote,
                                        **PRODUCTION_KEYS})
    assert mongo_client_options(production, remote)["connectTimeoutMS"] == 10000
    assert mongo_client_options(production, remote)["maxIdleTimeMS"] is None
    # The suite's and the benchmarks' embedded servers come as a loopback URI: embedded values.
    assert mongo_client_options(production, "mongodb://127.0.0.1:40000/")["connectTimeoutMS"] == 30000
    # An option the URI sets itself wins over the setting.
    given = mongo_client_options(production, remote + "&connectTimeoutMS=5000&socketTimeoutMS=60000")
    assert "connectTimeoutMS" not in given and "socketTimeoutMS" not in given
    assert given["heartbeatFrequencyMS"] == 10000

    tuned = load_settings(environ={"WXB_DATA_DIR": str(tmp_path),
                                   "WXB_MONGODB_EMBEDDED_CONNECT_TIMEOUT_MS": "45000",
                                   "WXB_MONGODB_EMBEDDED_SOCKET_TIMEOUT_MS": "120000",
                                   "WXB_MONGODB_SERVER_MONITORING_MODE": "poll"})
    options = mongo_client_options(tuned, "")
    assert options["connectTimeoutMS"] == 45000 and options["socketTimeoutMS"] == 120000
    assert options["serverMonitoringMode"] == "poll"


@pytest.mark.parametrize(("name", "value", "message"), [
    ("WXB_MONGODB_SERVER_MONITORING_MODE", "push", "auto, stream or poll"),
    ("WXB_MONGODB_HEARTBEAT_FREQUENCY_MS", "100", "at least 500"),
    ("WXB_MONGODB_EMBEDDED_CONNECT_TIMEOUT_MS", "0", "at least 1"),
    ("WXB_MONGODB_SOCKET_TIMEOUT_MS", "-1", "at least 0"),
    ("WXB_MONGODB_EMBEDDED_MAX_IDLE_TIME_MS", "-5", "at least 0"),
])
def test_bad_client_settings_are_refused(tmp_path, name, value, message):
    with pytest.raises(ConfigError, match=message) as refused:
        load_settings(environ={"WXB_DATA_DIR": str(tmp_path), name: value})
    assert str(refused.value).startswith(name)


def test_the_running_client_uses_the_embedded_values(ctx):
    """The suite's SecantusDB (a loopback URI) gets the embedded timeouts, end to end."""
    options = ctx.mongo.options
    assert options.pool_options.connect_timeout == 30.0
    assert options.pool_options.socket_timeout is None
    assert options.heartbeat_frequency == 10.0
    assert options.pool_options.max_idle_time_seconds == 240.0
    assert options.server_monitoring_mode == "stream"


@pytest.mark.parametrize(("uri", "local"), [
    ("mongodb://127.0.0.1:27017/?retryWrites=false&directConnection=true", True),
    ("mongodb://localhost,[::1]:27018/db?replicaSet=rs0", True),
    ("mongodb://%2Ftmp%2Fmongodb-27017.sock", True),
    ("mongodb://user:pw@127.0.0.1:27017/admin", True),
    ("mongodb://127.0.0.1:27017,db2.example.cn:27017/?replicaSet=rs0", False),
    ("mongodb://10.0.0.5:27017/", False),
    ("mongodb+srv://cluster0.example.cn/", False),
    ("", False),
])
def test_is_local_uri(uri, local):
    assert is_local_uri(uri) is local
