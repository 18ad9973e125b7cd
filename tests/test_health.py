"""/healthz, /metrics, request ids, and surviving a database outage."""

import asyncio
import time
import uuid

import httpx
import pytest

from handlers.health import ip_in_networks
from models import ensure_indexes
from tests.conftest import ADMIN_PASSWORD, build_city, make_settings
from tests.webclient import WebClient
from wxbackend.app import make_app
from wxbackend.context import AppContext
from wxbackend.embedded import EmbeddedServers, free_port
from wxbackend.services import installed
from wxbackend.settings import parse_networks


async def test_healthz_and_metrics(server_url):
    async with httpx.AsyncClient(base_url=server_url) as client:
        health = await client.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"mongo": "ok", "redis": "ok"}
        assert len(health.headers["X-Request-Id"]) == 32
        traced = await client.get("/healthz", headers={"X-Request-Id": "trace-abc-123"})
        assert traced.headers["X-Request-Id"] == "trace-abc-123"
        metrics = await client.get("/metrics")  # from 127.0.0.1: in the default networks
        assert metrics.status_code == 200
        assert 'wxb_http_requests_total{handler="HealthHandler",method="GET",status="200"}' in metrics.text


async def test_metrics_are_refused_outside_the_configured_networks(ctx, server_url):
    assert ctx.settings.http.metrics_networks == "127.0.0.0/8,::1/128"  # the default
    ctx.settings.http.metrics_networks = "10.0.0.0/8,2001:db8::/32"  # loopback not among them
    async with httpx.AsyncClient(base_url=server_url) as client:
        refused = await client.get("/metrics")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "metrics_forbidden"
        assert "wxb_" not in refused.text
        assert (await client.get("/healthz")).status_code == 200  # the load balancer's check stays open
        ctx.settings.http.metrics_networks = ""  # nobody
        assert (await client.get("/metrics")).status_code == 403
        ctx.settings.http.metrics_networks = "10.0.0.0/8, 127.0.0.1"  # a single address counts
        assert (await client.get("/metrics")).status_code == 200


async def test_metrics_judge_the_proxied_client_when_xheaders_is_on(ctx):
    """Behind nginx every connection comes from the proxy: the client is its X-Real-Ip."""
    port = free_port()
    server = make_app(ctx).listen(port, "127.0.0.1", xheaders=True)  # as serve with [http] xheaders
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for header in ("X-Real-Ip", "X-Forwarded-For"):
                outsider = await client.get("/metrics", headers={header: "203.0.113.7"})
                assert outsider.status_code == 403, header  # the proxy itself is on loopback
            ctx.settings.http.metrics_networks = "203.0.113.0/24"
            assert (await client.get("/metrics", headers={"X-Real-Ip": "203.0.113.7"})).status_code == 200
            assert (await client.get("/metrics", headers={"X-Real-Ip": "198.51.100.1"})).status_code == 403
    finally:
        server.stop()
        await server.close_all_connections()


def test_ip_in_networks():
    loopback = parse_networks("127.0.0.0/8,::1/128", "WXB_HTTP_METRICS_NETWORKS")
    assert ip_in_networks("127.0.0.1", loopback) and ip_in_networks("127.8.9.10", loopback)
    assert ip_in_networks("::1", loopback)
    assert ip_in_networks("::ffff:127.0.0.1", loopback)  # IPv4 through a dual-stack socket
    assert not ip_in_networks("10.0.0.1", loopback) and not ip_in_networks("::2", loopback)
    assert not ip_in_networks("::ffff:10.0.0.1", loopback)
    assert not ip_in_networks("", loopback) and not ip_in_networks("localhost", loopback)
    assert not ip_in_networks("127.0.0.1", ())


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
