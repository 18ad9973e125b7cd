"""The mini-program API over real HTTP, with WeChat played by the sandbox."""

import asyncio
import json
from datetime import timedelta

import httpx
import pytest

from handlers.api.openapi import api_routes, endpoints
from tests.conftest import ADMIN_PASSWORD, actor_of
from tests.factories import member_fields
from tests.meetings_helpers import plan_fields
from wxbackend.app import make_app
from wxbackend.services import meetings
from wxbackend.services.orgs import members

API = "/api/v1"


async def login(api, sandbox, openid, **extra):
    code = await sandbox.login_code(openid, **extra)
    response = await api.post(f"{API}/auth/login", json={"code": code})
    assert response.status_code == 200, response.text
    return response.json()


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def member(ctx, city):
    fields = member_fields("小程序党员")
    created = await members.create(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), fields)
    return created, fields


async def bound_token(api, sandbox, member, openid="oMini1"):
    _, fields = member
    session = await login(api, sandbox, openid)
    response = await api.post(f"{API}/me/bind", headers=bearer(session["token"]),
                              json={"name": fields["name"], "id_card": fields["id_card"], "phone": fields["phone"]})
    assert response.status_code == 200, response.text
    return session["token"]


async def test_login_bind_and_read_profile(api, sandbox, member):
    created, fields = member
    session = await login(api, sandbox, "oMini1")
    assert session["bound"] is False and session["member"] is None
    assert "session_key" not in json.dumps(session)
    me = await api.get(f"{API}/me", headers=bearer(session["token"]))
    assert me.status_code == 403 and me.json()["error"]["code"] == "not_bound"
    bound = await api.post(f"{API}/me/bind", headers=bearer(session["token"]),
                           json={"name": fields["name"], "id_card": fields["id_card"], "phone": fields["phone"]})
    assert bound.status_code == 200, bound.text
    me = await api.get(f"{API}/me", headers=bearer(session["token"]))
    assert me.status_code == 200
    body = me.json()
    assert body["name"] == "小程序党员" and body["id_card"] == fields["id_card"]  # the owner sees it
    assert body["branch"]["name"] == "东区第一党支部" and body["bindings"]["mini_program"] is True
    again = await login(api, sandbox, "oMini1")
    assert again["bound"] is True and again["member"]["id"] == str(created["_id"])


async def test_unionid_recognises_a_member_bound_through_the_official_account(ctx, api, sandbox, member):
    from wxbackend.services.orgs import binding

    created, fields = member
    await binding.bind(ctx, "oa", "oOfficial1", "uSameWeChatUser", fields["name"], fields["id_card"],
                       fields["phone"], "127.0.0.1")
    session = await login(api, sandbox, "oMini9", unionid="uSameWeChatUser")
    assert session["bound"] is True and session["member"]["id"] == str(created["_id"])
    stored = await ctx.db.members.find_one({"_id": created["_id"]})
    assert stored["mp_openid"] == "oMini9" and stored["oa_openid"] == "oOfficial1"


async def test_reused_or_unknown_code_is_401_and_rate_limit_is_429(api, sandbox):
    code = await sandbox.login_code("oMini2")
    assert (await api.post(f"{API}/auth/login", json={"code": code})).status_code == 200
    reused = await api.post(f"{API}/auth/login", json={"code": code})
    assert reused.status_code == 401 and reused.json()["error"]["code"] == "code_invalid"
    await sandbox.fault("/sns/jscode2session", errcode=45011, times=1)
    limited = await api.post(f"{API}/auth/login", json={"code": await sandbox.login_code("oMini2")})
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "60"
    await sandbox.fault("/sns/jscode2session", errcode=-1, times=5)
    busy = await api.post(f"{API}/auth/login", json={"code": await sandbox.login_code("oMini2")})
    assert busy.status_code == 503 and busy.json()["error"]["code"] == "wechat_unavailable"


@pytest.mark.parametrize("header", ["Bearer forged-token", "Bearer", "Basic abc", "Bearer " + "x" * 300])
async def test_forged_tokens_are_401(api, header):
    response = await api.get(f"{API}/me", headers={"Authorization": header})
    assert response.status_code == 401 and response.json()["error"]["code"] == "token_invalid"


async def test_missing_token_is_401(api):
    response = await api.get(f"{API}/me")
    assert response.status_code == 401


async def test_logout_revokes_and_expired_tokens_fail(ctx, api, sandbox, member):
    token = await bound_token(api, sandbox, member)
    assert (await api.post(f"{API}/auth/logout", headers=bearer(token))).status_code == 200
    assert (await api.get(f"{API}/me", headers=bearer(token))).status_code == 401
    ctx.settings.api.token_ttl_seconds = 1
    short = (await login(api, sandbox, "oMini1"))["token"]
    await asyncio.sleep(2.2)
    assert (await api.get(f"{API}/me", headers=bearer(short))).status_code == 401


async def test_unbinding_by_the_secretary_revokes_the_session(ctx, city, api, sandbox, member):
    from wxbackend.services.orgs import binding

    token = await bound_token(api, sandbox, member)
    await binding.unbind(ctx, actor_of(city, "sec_a1"), member[0]["_id"], "mp")
    response = await api.get(f"{API}/me", headers=bearer(token))
    assert response.status_code == 401


async def test_branch_roster_only_for_my_own_branch(ctx, city, api, sandbox, member):
    for name in ("同支部甲", "同支部乙"):
        await members.create(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), member_fields(name))
    await members.create(ctx, actor_of(city, "city"), city.org("branch_a2"), member_fields("别的支部"))
    token = await bound_token(api, sandbox, member)
    mine = await api.get(f"{API}/me/branch?limit=2", headers=bearer(token))
    assert mine.status_code == 200, mine.text
    first = mine.json()
    assert first["name"] == "东区第一党支部" and first["member_count"] == 3
    assert len(first["members"]["items"]) == 2 and first["members"]["next_cursor"]
    rest = await api.get(f"{API}/me/branch", params={"limit": 2, "cursor": first["members"]["next_cursor"]},
                         headers=bearer(token))
    names = [m["name"] for m in first["members"]["items"] + rest.json()["members"]["items"]]
    assert sorted(names) == sorted(["同支部甲", "同支部乙", "小程序党员"])
    other = await api.get(f"{API}/branches/{city.org('branch_a2')}", headers=bearer(token))
    assert other.status_code == 403 and "别的支部" not in other.text
    same = await api.get(f"{API}/branches/{city.org('branch_a1')}", headers=bearer(token))
    assert same.status_code == 200


@pytest.mark.parametrize("body, status, code, field", [
    (b"{not json", 400, "invalid_json", None),
    (b"", 400, "invalid_json", None),
    (b'{"code": 12345}', 400, "invalid_request", "code"),
    (b'{"code": "abc", "extra": 1}', 400, "invalid_request", "extra"),
    (b'{}', 400, "invalid_request", "code"),
    (b'{"code": ""}', 400, "invalid_request", "code"),
    (b'[1, 2]', 400, "invalid_request", "(body)"),
])
async def test_malformed_requests_get_field_errors(api, body, status, code, field):
    response = await api.post(f"{API}/auth/login", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    if field:
        assert error["details"][0]["field"] == field


async def test_oversized_body_is_413(api):
    response = await api.post(f"{API}/auth/login", content=b'{"code": "' + b"x" * 70000 + b'"}')
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"


async def test_idempotency_key_replays_and_refuses_other_bodies(api, sandbox):
    code = await sandbox.login_code("oMini3")
    headers = {"Idempotency-Key": "login-attempt-1"}
    first = await api.post(f"{API}/auth/login", json={"code": code}, headers=headers)
    second = await api.post(f"{API}/auth/login", json={"code": code}, headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json() and second.headers["Idempotent-Replayed"] == "true"
    assert sandbox.calls("/sns/jscode2session") == 1
    other = await api.post(f"{API}/auth/login", json={"code": "different"}, headers=headers)
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    bad = await api.post(f"{API}/auth/login", json={"code": code}, headers={"Idempotency-Key": "has space/slash"})
    assert bad.status_code == 400


async def test_concurrent_double_tap_has_one_effect(api, sandbox, member):
    created, fields = member
    session = await login(api, sandbox, "oMini4")
    payload = {"name": fields["name"], "id_card": fields["id_card"], "phone": fields["phone"]}
    headers = {**bearer(session["token"]), "Idempotency-Key": "bind-tap"}
    answers = await asyncio.gather(*[api.post(f"{API}/me/bind", json=payload, headers=headers) for _ in range(5)])
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(200) >= 1 and set(statuses) <= {200, 409}
    assert {a.json()["id"] for a in answers if a.status_code == 200} == {str(created["_id"])}


async def test_rate_limit_per_ip(ctx, api):
    ctx.settings.api.rate_per_ip_per_minute = 3
    answers = [await api.get(f"{API}/openapi.json") for _ in range(5)]
    assert [a.status_code for a in answers][:3] == [200, 200, 200]
    assert answers[4].status_code == 429 and int(answers[4].headers["Retry-After"]) >= 1


async def test_phone_verification(ctx, api, sandbox, member):
    created, fields = member
    token = await bound_token(api, sandbox, member)
    same = await sandbox.http.post("/sandbox/mp/users/oMini1/phone-code", json={"phone": fields["phone"]})
    answer = await api.post(f"{API}/me/phone", json={"code": same.json()["code"]}, headers=bearer(token))
    assert answer.status_code == 200 and answer.json()["outcome"] == "verified"
    other = await sandbox.http.post("/sandbox/mp/users/oMini1/phone-code", json={"phone": "13700000000"})
    differs = await api.post(f"{API}/me/phone", json={"code": other.json()["code"]}, headers=bearer(token))
    assert differs.status_code == 422 and differs.json()["error"]["code"] == "phone_differs"
    stored = await ctx.db.members.find_one({"_id": created["_id"]})
    assert stored["phone_bidx"] == ctx.cipher.blind_index(fields["phone"], "phone")
    reused = await api.post(f"{API}/me/phone", json={"code": same.json()["code"]}, headers=bearer(token))
    assert reused.status_code == 400


async def test_timeline_lists_my_record_events(api, sandbox, member):
    token = await bound_token(api, sandbox, member)
    answer = await api.get(f"{API}/me/timeline", headers=bearer(token))
    kinds = [e["kind"] for e in answer.json()["items"]]
    assert kinds[:2] == ["member.bind", "member.create"]


async def test_request_ids_on_api_responses(api):
    answer = await api.get(f"{API}/openapi.json", headers={"X-Request-Id": "req-12345678"})
    assert answer.headers["X-Request-Id"] == "req-12345678"


async def test_openapi_lists_every_api_route(ctx, api):
    document = (await api.get(f"{API}/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    for route in api_routes(make_app(ctx).declared_routes):
        declared = endpoints(route)
        assert declared, f"{route.template} has no declared endpoint"
        for method in declared:
            assert method in document["paths"][route.template], (route.template, method)
        undeclared = [m for m in ("get", "post", "put", "patch", "delete")
                      if m in vars(route.handler) and m not in declared]
        assert not undeclared, f"{route.template}: {undeclared} not declared with @endpoint"
    login = document["paths"]["/api/v1/auth/login"]["post"]
    assert login["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("LoginRequest")
    assert "401" in login["responses"] and "429" in login["responses"]


async def test_every_api_path_of_the_app_is_documented(ctx, server_url):
    async with httpx.AsyncClient(base_url=server_url) as client:
        document = (await client.get(f"{API}/openapi.json")).json()
    patterns = [p for p, *_ in make_app(ctx).declared_routes if p.startswith("/api/")]
    assert len(patterns) == sum(len(v) > 0 for v in document["paths"].values())


async def test_repeated_query_parameters_are_refused(api, sandbox, member):
    token = await bound_token(api, sandbox, member)
    answer = await api.get(f"{API}/me/timeline?limit=abc&limit=5", headers=bearer(token))
    assert answer.status_code == 400 and answer.json()["error"]["details"][0]["field"] == "limit"


@pytest.mark.parametrize("code", ["\u0019", "a b", "\u4e2d\u6587", "x\n"])
async def test_login_codes_that_are_not_printable_ascii_are_400(api, sandbox, code):
    answer = await api.post(f"{API}/auth/login", json={"code": code})
    assert answer.status_code == 400 and answer.json()["error"]["code"] in ("invalid_request", "bad_code")
    assert sandbox.calls("/sns/jscode2session") == 0


async def test_bind_answers_a_right_guess_at_a_bound_member_as_a_wrong_one(ctx, api, sandbox, member):
    created, fields = member
    await bound_token(api, sandbox, member, openid="oOwner")
    answers = []
    for openid, card in (("oGuess1", fields["id_card"]), ("oGuess2", member_fields()["id_card"])):
        token = (await login(api, sandbox, openid))["token"]
        answers.append(await api.post(f"{API}/me/bind", headers=bearer(token), json={
            "name": fields["name"], "id_card": card, "phone": fields["phone"]}))
    right, wrong = answers
    assert right.status_code == wrong.status_code == 422
    assert right.json() == wrong.json() and right.json()["error"]["code"] == "bind_mismatch"
    assert (await ctx.db.members.find_one({"_id": created["_id"]}))["mp_openid"] == "oOwner"


async def test_bind_locks_a_name_whatever_accounts_guess_it(ctx, api, sandbox, member):
    created, fields = member
    ctx.settings.wechat.bind_target_max_failures = 3
    for i in range(3):
        token = (await login(api, sandbox, f"oGuess{i}"))["token"]
        await api.post(f"{API}/me/bind", headers=bearer(token), json={
            "name": fields["name"], "id_card": member_fields()["id_card"], "phone": ""})
    token = (await login(api, sandbox, "oGuessRight"))["token"]
    answer = await api.post(f"{API}/me/bind", headers=bearer(token), json={
        "name": fields["name"], "id_card": fields["id_card"], "phone": fields["phone"]})
    assert answer.status_code == 429 and answer.json()["error"]["code"] == "bind_locked"
    assert int(answer.headers["Retry-After"]) > 86000
    assert "mp_openid" not in await ctx.db.members.find_one({"_id": created["_id"]})
    assert (await api.get(f"{API}/me", headers=bearer(token))).status_code == 403  # still not bound


def assert_plain_utf8_json(answer, *texts):
    """A JSON body as written: the content type says UTF-8 and the Chinese is in raw bytes."""
    assert answer.headers["Content-Type"] == "application/json; charset=utf-8"
    assert b"\\u" not in answer.content, answer.content[:200]
    for text in texts:
        assert text.encode("utf-8") in answer.content


async def test_errors_and_successes_are_plain_utf8_json(api, sandbox, member):
    unauthorised = await api.get(f"{API}/me")
    assert unauthorised.status_code == 401
    assert_plain_utf8_json(unauthorised, "登录已失效，请重新登录")
    invalid = await api.post(f"{API}/auth/login", content=b"{not json")
    assert invalid.status_code == 400
    assert_plain_utf8_json(invalid, "请求内容不是有效的 JSON")
    assert_plain_utf8_json(await api.get(f"{API}/no-such-path"), "找不到该页面")
    token = await bound_token(api, sandbox, member)
    assert_plain_utf8_json(await api.get(f"{API}/me", headers=bearer(token)), "小程序党员")
    assert_plain_utf8_json(await api.get(f"{API}/openapi.json"), "小程序登录")


async def test_idempotent_replays_of_errors_are_plain_utf8(api, sandbox, member):
    _, fields = member
    token = (await login(api, sandbox, "oReplay"))["token"]
    wrong = {"name": fields["name"], "id_card": member_fields()["id_card"], "phone": fields["phone"]}
    headers = {**bearer(token), "Idempotency-Key": "utf8-replay"}
    first = await api.post(f"{API}/me/bind", headers=headers, json=wrong)
    again = await api.post(f"{API}/me/bind", headers=headers, json=wrong)
    assert first.status_code == again.status_code == 422 and again.headers["Idempotent-Replayed"] == "true"
    assert again.content == first.content
    assert_plain_utf8_json(again, first.json()["error"]["message"])


async def test_dicts_written_by_admin_handlers_are_plain_utf8_json(ctx, city, web):
    secretary = actor_of(city, "sec_a1")
    await members.create(ctx, secretary, city.org("branch_a1"), member_fields("看板党员"))
    start = ctx.clock.now() + timedelta(days=2)
    draft = await meetings.create(ctx, secretary, city.org("branch_a1"), plan_fields(start))
    await meetings.publish(ctx, secretary, draft["_id"])
    await web.login("sec_a1", ADMIN_PASSWORD)
    board = await web.get(f"/admin/meetings/{draft['_id']}/board.json")
    assert board.status_code == 200
    assert_plain_utf8_json(board, "看板党员")
