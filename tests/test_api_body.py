"""A JSON body that is not UTF-8 is a 400 with the error shape, never a 500.

msgspec reports bytes that are not UTF-8 *inside a string* with
``UnicodeDecodeError`` rather than its ``DecodeError``; the API turned that
into a 500 before.
"""

from __future__ import annotations

import pytest

from tests.conftest import actor_of
from tests.factories import member_fields
from wxbackend.services.orgs import members

API = "/api/v1"
NOT_UTF8 = [b"\xff\xfe{", b'{"code": "\xff"}', b'{"code": "abc\xc3"}', b'{"code": "\xed\xa0\x80"}']


@pytest.mark.parametrize("body", NOT_UTF8)
async def test_a_body_that_is_not_utf8_is_a_400_with_the_error_shape(ctx, api, sandbox, body):
    answer = await api.post(f"{API}/auth/login", content=body,
                            headers={"Content-Type": "application/json", "Idempotency-Key": "k1"})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_json" and answer.json()["error"]["message"]
    assert sandbox.calls("/sns/jscode2session") == 0 and await ctx.redis.keys("idem:*") == []


async def test_a_bind_that_is_not_utf8_binds_nobody(ctx, city, api, sandbox):
    fields = member_fields("编码党员")
    created = await members.create(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), fields)
    login = await api.post(f"{API}/auth/login", json={"code": await sandbox.login_code("oUtf8")})
    token = login.json()["token"]
    body = f'{{"name": "{fields["name"]}", "id_card": "{fields["id_card"]}'.encode() + b'\xff"}'
    answer = await api.post(f"{API}/me/bind", content=body,
                            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_json"
    stored = await ctx.db.members.find_one({"_id": created["_id"]})
    assert not stored.get("mp_openid")
