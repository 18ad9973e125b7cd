"""Answers kept for Idempotency-Key replays hold no secret in clear.

The review found the cache storing, for 24 h, the bearer token of
``POST /auth/login`` and the clear ID-card number and phone of ``POST /me/bind``.
Each test reads the raw Redis records the real API left behind.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.conftest import actor_of
from tests.factories import member_fields
from wxbackend.services.orgs import members

API = "/api/v1"


@pytest.fixture
async def member(ctx, city):
    fields = member_fields("幂等党员")
    created = await members.create(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), fields)
    return created, fields


async def raw_records(ctx) -> dict[bytes, bytes]:
    return {key: await ctx.redis.get(key) for key in await ctx.redis.keys("idem:*")}


def redis_key(openid: str, path: str, key: str) -> str:
    """Where the API keeps a caller's answer (wxbackend/idempotency.py)."""
    return "idem:" + hashlib.sha256(f"{openid}\nPOST\n{API}{path}\n{key}".encode()).hexdigest()


async def login(api, sandbox, openid: str) -> str:
    answer = await api.post(f"{API}/auth/login", json={"code": await sandbox.login_code(openid)})
    assert answer.status_code == 200, answer.text
    return answer.json()["token"]


async def test_a_replayed_login_keeps_no_bearer_token_in_redis(ctx, api, sandbox):
    body = json.dumps({"code": await sandbox.login_code("oIdem1")}).encode()
    headers = {"Idempotency-Key": "login-1", "Content-Type": "application/json"}
    first = await api.post(f"{API}/auth/login", content=body, headers=headers)
    assert first.status_code == 200
    token = first.json()["token"]
    records = await raw_records(ctx)
    assert len(records) == 1
    raw = next(iter(records.values()))
    assert token.encode() not in raw and hashlib.sha256(body).hexdigest().encode() not in raw
    replay = await api.post(f"{API}/auth/login", content=body, headers=headers)
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json() and sandbox.calls("/sns/jscode2session") == 1


async def test_a_replayed_bind_keeps_no_id_card_or_phone_in_redis(ctx, api, sandbox, member):
    created, fields = member
    token = await login(api, sandbox, "oIdem2")
    payload = {"name": fields["name"], "id_card": fields["id_card"], "phone": fields["phone"]}
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "bind-1"}
    first = await api.post(f"{API}/me/bind", json=payload, headers=headers)
    assert first.status_code == 200 and first.json()["id_card"] == fields["id_card"]
    raw = b"".join(f"{k!r}{v!r}".encode() for k, v in (await raw_records(ctx)).items())
    for secret in (fields["id_card"], fields["phone"], fields["name"], fields["id_card"][-6:]):
        assert secret.encode() not in raw and json.dumps(secret).encode() not in raw, secret
    replay = await api.post(f"{API}/me/bind", json=payload, headers=headers)
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json() and replay.json()["id"] == str(created["_id"])


async def test_an_answer_copied_under_another_callers_key_is_not_replayed(ctx, api, sandbox, member):
    """The sealed answer names its caller: moved to someone else's key, it does not open."""
    _, fields = member
    owner, other = await login(api, sandbox, "oIdemOwner"), await login(api, sandbox, "oIdemOther")
    payload = {"name": fields["name"], "id_card": fields["id_card"], "phone": fields["phone"]}
    bound = await api.post(f"{API}/me/bind", json=payload,
                           headers={"Authorization": f"Bearer {owner}", "Idempotency-Key": "same-key"})
    assert bound.status_code == 200
    record = await ctx.redis.get(redis_key("oIdemOwner", "/me/bind", "same-key"))
    await ctx.redis.set(redis_key("oIdemOther", "/me/bind", "same-key"), record)
    stolen = await api.post(f"{API}/me/bind", json=payload,
                            headers={"Authorization": f"Bearer {other}", "Idempotency-Key": "same-key"})
    assert "Idempotent-Replayed" not in stolen.headers
    # It ran: the member is bound to the owner, so the other account gets the wrong-guess answer.
    assert stolen.status_code == 422 and fields["id_card"] not in stolen.text


async def test_a_clear_record_left_by_the_old_format_is_not_replayed(ctx, api, sandbox):
    body = json.dumps({"code": await sandbox.login_code("oIdem3")}).encode()
    key = "idem:" + hashlib.sha256(f"127.0.0.1\nPOST\n{API}/auth/login\nlegacy-1".encode()).hexdigest()
    old = {"hash": hashlib.sha256(body).hexdigest(), "status": 200,
           "body": json.dumps({"token": "clear-old-token", "bound": False, "member": None, "expires_in": 1})}
    await ctx.redis.set(key, json.dumps(old), ex=600)
    answer = await api.post(f"{API}/auth/login", content=body,
                            headers={"Idempotency-Key": "legacy-1", "Content-Type": "application/json"})
    assert answer.status_code == 200 and "Idempotent-Replayed" not in answer.headers
    assert answer.json()["token"] != "clear-old-token" and sandbox.calls("/sns/jscode2session") == 1
    stored = await ctx.redis.get(key)
    assert b"clear-old-token" not in stored and answer.json()["token"].encode() not in stored
