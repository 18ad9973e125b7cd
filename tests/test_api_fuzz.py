"""Property-based fuzzing of the whole mini-program API from its OpenAPI document.

Schemathesis generates requests (valid and invalid) for every operation of
``/api/v1/openapi.json`` and checks the answers against the document; no
request may produce a 5xx. The server and the WeChat sandbox run in a thread
with their own event loop, because schemathesis calls them synchronously.
The queries the fuzzing causes are explained like every other test's.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from dataclasses import dataclass

import pytest
import schemathesis
import schemathesis.checks
from hypothesis import HealthCheck, settings

from handlers import routes
from handlers.api.openapi import api_routes, build_document
from models import ensure_indexes
from tests.conftest import build_city, make_settings
from tests.factories import member_fields
from tests.queryshapes import QueryRecorder, check_pending
from tests.wechat_fixtures import use_test_credentials
from wxbackend.app import make_app
from wxbackend.context import AppContext
from wxbackend.embedded import free_port
from wxbackend.services import installed
from wxbackend.services.accounts import mpsessions
from wxbackend.services.accounts.access import Actor
from wxbackend.services.orgs import binding, members
from wxbackend.wechat.sandbox import SandboxConfig, make_sandbox_app


@dataclass
class FuzzServer:
    url: str
    token: str
    scans: list[str]


def _serve(servers, data_dir, ready: threading.Event, stop: threading.Event, out: dict) -> None:
    async def main() -> None:
        settings = make_settings(servers, data_dir)
        use_test_credentials(settings)
        sandbox_port, port = free_port(), free_port()
        settings.wechat.api_base = settings.wechat.oauth_base = f"http://127.0.0.1:{sandbox_port}"
        sandbox = make_sandbox_app(SandboxConfig.from_settings(settings, mode="safe")).listen(sandbox_port, "127.0.0.1")
        recorder = QueryRecorder()
        ctx = await AppContext.connect(settings, servers.mongodb_uri, servers.redis_url,
                                       database=f"fuzz_{uuid.uuid4().hex[:10]}", event_listeners=[recorder],
                                       registry=installed.registry(settings))
        await ensure_indexes(ctx.db, ctx.registry.models)
        city = await build_city(ctx)
        fields = member_fields("模糊测试")
        await members.create(ctx, Actor.system_actor("fuzz"), city.org("branch_a1"), fields)
        member = await binding.bind(ctx, "mp", "oFuzzUser", None, fields["name"], fields["id_card"],
                                    fields["phone"], "127.0.0.1")
        token = await mpsessions.open_session(ctx, openid="oFuzzUser", unionid=None,
                                              session_key="tiihtNczf5v6AKRyjwEUhQ==", member_id=member["_id"])
        ctx.settings.api.rate_per_ip_per_minute = ctx.settings.api.rate_per_user_per_minute = 10**6
        server = make_app(ctx).listen(port, "127.0.0.1")
        out["server"] = FuzzServer(f"http://127.0.0.1:{port}", token, [])
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        out["server"].scans.extend(await check_pending(ctx.mongo, recorder))
        server.stop()
        sandbox.stop()
        await ctx.mongo.drop_database(ctx.db.name)
        await ctx.close()

    try:
        asyncio.run(main())
    except BaseException as exc:  # surfaced by the fixture
        out["error"] = exc
        ready.set()


@pytest.fixture(scope="module")
def fuzz_server(servers, tmp_path_factory):
    ready, stop, out = threading.Event(), threading.Event(), {}
    thread = threading.Thread(target=_serve, args=(servers, tmp_path_factory.mktemp("fuzz"), ready, stop, out),
                              daemon=True)
    thread.start()
    assert ready.wait(60), "fuzz server did not start"
    if "error" in out:
        raise out["error"]
    yield out["server"]
    stop.set()
    thread.join(60)
    assert not out["server"].scans, "queries without an index:\n" + "\n".join(out["server"].scans)


# The document is built from the endpoint declarations alone, so it is loaded
# without a server (and the served copy is checked equal below).
DOCUMENT = build_document(api_routes(routes.table(c.name for c in installed.INSTALLED)))
schema = schemathesis.openapi.from_dict(DOCUMENT)


def test_served_document_is_the_fuzzed_one(fuzz_server):
    import httpx

    assert httpx.get(f"{fuzz_server.url}/api/v1/openapi.json").json() == DOCUMENT


# Every check but one: positive_data_acceptance expects 2xx for any input the
# schema admits, but part of our validation cannot be said in JSON Schema (an
# ID-card check digit, a cursor we issued, a WeChat code that must exist), so
# such input is rightly refused with a documented 400/422.
EXCLUDED = [schemathesis.checks.positive_data_acceptance]


# Derandomized, so every run (and CI) tries the same examples: randomly drawn negative
# cases sometimes lose their negation on the way out (a null query value dropped, the
# Authorization header a negative case removed being put back by us) and then read as
# "accepted bad data". WXB_FUZZ_RANDOM=1 explores fresh examples by hand.
@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck),
          derandomize=not os.environ.get("WXB_FUZZ_RANDOM"))
def test_no_server_errors_and_answers_match_the_document(case, fuzz_server):
    headers = {"Authorization": f"Bearer {fuzz_server.token}"} if case.operation.path != "/api/v1/auth/logout" else {}
    case.call_and_validate(base_url=fuzz_server.url, headers=headers, excluded_checks=EXCLUDED)
