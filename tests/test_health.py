"""/healthz, /metrics, request ids, and surviving a database outage."""

import asyncio
import time
import uuid

import httpx
import pytest

from models import ensure_indexes
from tests.conftest import ADMIN_PASSWORD, build_city, make_settings
from tests.webclient import WebClient
from wxbackend.app import make_app
from wxbackend.context import AppContext
from wxbackend.embedded import EmbeddedServers, free_port
from wxbackend.services import installed


async def test_healthz_and_metrics(server_url):
    async with httpx.AsyncClient(base_url=server_url) as client:
        health = await client.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"mongo": "ok", "redis": "ok"}
        assert len(health.headers["X-Request-Id"]) == 32
        traced = await client.get("/healthz", headers={"X-Request-Id": "trace-abc-123"})
        assert traced.headers["X-Request-Id"] == "trace-abc-123"
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert 'wxb_http_requests_total{handler="HealthHandler",method="GET",status="200"}' in metrics.text


@pytest.fixture
async def own_servers(tmp_path):
    """Servers this test may stop and restart without disturbing the others."""
    servers = EmbeddedServers(tmp_path / "own").start()
    try:
        yield servers
    finally:
        servers.stop()


async def test_database_outage_gives_503_and_recovers_by_itself(own_servers, tmp_path):
    settings = make_settings(own_servers, tmp_path, WXB_MONGODB_SERVER_SELECTION_TIMEOUT_MS="800")
    ctx = await AppContext.connect(settings, own_servers.mongodb_uri, own_servers.redis_url,
                                   database=f"t_{uuid.uuid4().hex[:12]}", registry=installed.registry(settings))
    await ensure_indexes(ctx.db, ctx.registry.models)
    city = await build_city(ctx)
    port = free_port()
    server = make_app(ctx).listen(port, "127.0.0.1")
    web = WebClient(f"http://127.0.0.1:{port}")
    try:
        await web.login("east", ADMIN_PASSWORD)
        page = f"/admin/orgs/{city.org('district_a')}"
        assert (await web.get(page)).status_code == 200

        # The test is about the outage, not durability: SecantusDB can lose the
        # last milliseconds of acknowledged writes to kill -9 (measured), here
        # the admin user created a moment ago.
        await ctx.mongo.admin.command("fsync")
        own_servers.mongo.kill()
        health = await web.get("/healthz")
        assert health.status_code == 503 and health.json() == {"mongo": "down", "redis": "ok"}
        down = await web.get(page)
        assert down.status_code == 503 and "服务暂时不可用" in down.text
        assert "Traceback" not in down.text

        own_servers.mongo.start()  # same port, same storage
        deadline = time.monotonic() + 30
        while (await web.get("/healthz")).status_code != 200:
            assert time.monotonic() < deadline, "server did not recover"
            await asyncio.sleep(0.3)
        assert (await web.get(page)).status_code == 200
    finally:
        await web.close()
        server.stop()
        await ctx.close()


async def test_redis_outage_gives_503_not_a_crash(own_servers, tmp_path):
    settings = make_settings(own_servers, tmp_path)
    ctx = await AppContext.connect(settings, own_servers.mongodb_uri, own_servers.redis_url,
                                   database=f"t_{uuid.uuid4().hex[:12]}", registry=installed.registry(settings))
    await ensure_indexes(ctx.db, ctx.registry.models)
    await build_city(ctx)
    port = free_port()
    server = make_app(ctx).listen(port, "127.0.0.1")
    web = WebClient(f"http://127.0.0.1:{port}")
    try:
        await web.login("east", ADMIN_PASSWORD)
        assert (await web.get("/api/v1/me")).status_code == 401  # admitted through Redis, no token
        own_servers.redis.kill()
        health = await web.get("/healthz")
        assert health.status_code == 503 and health.json()["redis"] == "down"
        assert (await web.get("/admin/")).status_code == 503
        api = await web.get("/api/v1/me")  # the API's pipelined admission
        assert api.status_code == 503 and api.json()["error"]["code"] == "service_unavailable"
        own_servers.redis.start()
        deadline = time.monotonic() + 20
        while (await web.get("/healthz")).status_code != 200 or (
                await web.get("/api/v1/me")).status_code != 401:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.3)
    finally:
        await web.close()
        server.stop()
        await ctx.close()
