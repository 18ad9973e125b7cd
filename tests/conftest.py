"""Fixtures: real SecantusDB and Redis subprocesses, a real HTTP server.

One SecantusDB and one Redis serve the whole session; each test gets its own
database (dropped afterwards) and a flushed Redis, so tests do not see each
other. Every query a test issues is explained before its database goes, and
a collection scan fails the test (tests/queryshapes.py).
"""

from __future__ import annotations

import base64
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import httpx
import pytest
from bson import ObjectId

from models import ensure_indexes
from tests.queryshapes import QueryRecorder, check_pending
from tests.webclient import WebClient
from tests.wechat_fixtures import sandbox  # noqa: F401  (fixture for WeChat tests)
from wxbackend.app import make_app
from wxbackend.capability import Capability
from wxbackend.clock import Clock, parse_instant
from wxbackend.context import AppContext
from wxbackend.embedded import EmbeddedServers, free_port
from wxbackend.services import installed, orgs
from wxbackend.services.accounts import admins
from wxbackend.services.accounts.access import Actor
from wxbackend.settings import Settings, load_settings

ADMIN_PASSWORD = "correct-horse-battery"


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServers]:
    data = tmp_path_factory.mktemp("embedded")
    # Its Redis requires a password of its own, as in production: redis_url carries it.
    with EmbeddedServers(data) as running:
        yield running


def make_settings(servers: EmbeddedServers, data_dir: Path, **extra: str) -> Settings:
    environ = {
        "WXB_DATA_DIR": str(data_dir),
        "WXB_MONGODB_URI": servers.mongodb_uri,
        "WXB_REDIS_URL": servers.redis_url,
        "WXB_SECURITY_SECRET_KEY": secrets.token_urlsafe(40),
        "WXB_SECURITY_FIELD_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "WXB_SECURITY_LOGIN_MAX_FAILURES": "5",
        # A cheap argon2 profile: the suite hashes thousands of passwords.
        "WXB_SECURITY_PASSWORD_TIME_COST": "1",
        "WXB_SECURITY_PASSWORD_MEMORY_KIB": "64",
        "WXB_SECURITY_PASSWORD_PARALLELISM": "1",
        **extra,
    }
    return load_settings(environ=environ)


@pytest.fixture
def settings(servers: EmbeddedServers, tmp_path: Path) -> Settings:
    return make_settings(servers, tmp_path)


def suite_start() -> datetime | None:
    """Where each test's clock starts: ``WXB_TEST_TODAY`` (an ISO date or date-time), else now.

    ``WXB_TEST_TODAY=2027-03-31 make test`` runs the whole suite as if on that day
    (10:00 in Shanghai for a bare date); see README, "Tests".
    """
    raw = os.environ.get("WXB_TEST_TODAY", "").strip()
    return parse_instant(raw) if raw else None


@pytest.fixture
def clock() -> Clock:
    """The application clock of one test; a test that cares about the date sets it."""
    start = suite_start()
    return Clock.starting_at(start) if start else Clock()


@pytest.fixture
def extra_capabilities() -> tuple[Capability, ...]:
    """Capabilities a test module installs besides the real ones (override it in the module)."""
    return ()


@pytest.fixture
async def ctx(servers: EmbeddedServers, settings: Settings, clock: Clock,
              extra_capabilities: tuple[Capability, ...]) -> AsyncIterator[AppContext]:
    recorder = QueryRecorder()
    context = await AppContext.connect(settings, servers.mongodb_uri, servers.redis_url,
                                       database=f"t_{uuid.uuid4().hex[:12]}", event_listeners=[recorder],
                                       clock=clock, registry=installed.registry(settings, *extra_capabilities))
    await context.redis.flushdb()
    await ensure_indexes(context.db, context.registry.models)
    try:
        yield context
        scans = await check_pending(context.mongo, recorder)
        assert not scans, "queries without an index:\n" + "\n".join(scans)
    finally:
        await context.mongo.drop_database(context.db.name)
        await context.close()


@pytest.fixture
async def server_url(ctx: AppContext) -> AsyncIterator[str]:
    port = free_port()
    server = make_app(ctx).listen(port, "127.0.0.1", max_body_size=ctx.settings.http.max_body_bytes)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        await server.close_all_connections()


@pytest.fixture
async def api(server_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A JSON client of the server (the mini-program's side)."""
    async with httpx.AsyncClient(base_url=server_url, timeout=30) as client:
        yield client


@pytest.fixture
async def web(server_url: str) -> AsyncIterator[WebClient]:
    client = WebClient(server_url)
    try:
        yield client
    finally:
        await client.close()


@dataclass
class City:
    """A small city: root > two districts > branches, with one admin per level."""

    root: dict
    district_a: dict
    district_b: dict
    branch_a1: dict
    branch_a2: dict
    branch_b1: dict
    users: dict[str, dict]

    def org(self, name: str) -> ObjectId:
        return getattr(self, name)["_id"]


SYSTEM = Actor.system_actor("tests")


def years_before(day: date, years: int, months: int = 0) -> str:
    """The ISO date ``years`` and ``months`` before ``day`` (the 28th for a day a month lacks)."""
    total = day.year * 12 + day.month - 1 - years * 12 - months
    return date(total // 12, total % 12 + 1, min(day.day, 28)).isoformat()


async def build_city(ctx: AppContext) -> City:
    """Terms relative to the clock: both districts and A1 overdue, A2 and B1 in their term."""
    today = ctx.clock.today()
    root = await orgs.create(ctx, SYSTEM, None, name="中共示范市委员会", org_type="committee",
                             category="organ", code="ROOT")
    da = await orgs.create(ctx, SYSTEM, root["_id"], name="东区区委", org_type="committee",
                           category="organ", code="DA", term_start=years_before(today, 5, 6))
    db_ = await orgs.create(ctx, SYSTEM, root["_id"], name="西区区委", org_type="committee",
                            category="organ", code="DB", term_start=years_before(today, 5, 6))
    a1 = await orgs.create(ctx, SYSTEM, da["_id"], name="东区第一党支部", org_type="branch",
                           category="community", code="A1", term_start=years_before(today, 6))
    a2 = await orgs.create(ctx, SYSTEM, da["_id"], name="东区第二党支部", org_type="branch",
                           category="organ", code="A2", term_start=years_before(today, 1))
    b1 = await orgs.create(ctx, SYSTEM, db_["_id"], name="西区第一党支部", org_type="branch",
                           category="school", code="B1", term_start=years_before(today, 1))
    users = {}
    for username, role, org in [("city", "city_admin", root), ("east", "committee_admin", da),
                                ("west", "committee_admin", db_), ("sec_a1", "secretary", a1),
                                ("auditor_a", "auditor", da)]:
        users[username] = await admins.create_user(ctx, SYSTEM, username=username,
                                                   password=ADMIN_PASSWORD, display_name=username,
                                                   roles=[(role, org["_id"])])
    return City(root, da, db_, a1, a2, b1, users)


@pytest.fixture
async def city(ctx: AppContext) -> City:
    return await build_city(ctx)


def actor_of(city: City, username: str) -> Actor:
    return admins.actor_from_user(city.users[username], ip="127.0.0.1")
