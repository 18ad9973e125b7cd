"""Members who leave (转出, 停止党籍, 去世) lose the mini-program, over real HTTP.

The review's attack: after an admin set a member to 转出, their bearer token
still read the branch roster, meetings and comments, and still posted online
attendance, comments and ballots. Now any change of state revokes the tokens,
every request checks the member's state, and a former member who signs in
again reaches only their own (masked) profile and their own history.
"""

from __future__ import annotations

import asyncio

import pytest

from models import comments as comments_model
from models import members as members_model
from models import votes as votes_model
from tests.meetingkit import actor, add_members, bearer, held, light_city, phone_member, reload
from wxbackend.services.accounts import mpsessions
from wxbackend.services.meetings import votes
from wxbackend.services.orgs import members

API = "/api/v1"


@pytest.fixture
async def scene(ctx):
    """A bound member with a token, a meeting under way they may join, an open vote."""
    city = await light_city(ctx)
    me, token = await phone_member(ctx, city.branch_a1, "将转出党员")
    others = await add_members(ctx, city.branch_a1, 2, prefix="同支部")
    meeting = await held(ctx, city.branch_a1, "branch_assembly", ctx.clock.today(), [me, *others],
                         present=others, status="in_progress")
    vote = await votes.create(ctx, actor(city, "sec_a1"), meeting["_id"], "表决：接收预备党员",
                              ["同意", "不同意"])
    return city, me, token, meeting, vote


def requests(city, meeting, vote) -> list[tuple[str, str, dict | None]]:
    """Everything a bound member may do, reading and writing (not the own profile/history)."""
    m, v = meeting["_id"], vote["_id"]
    return [
        ("GET", "/me/branch", None),
        ("GET", f"/branches/{city.branch_a1['_id']}", None),
        ("GET", "/meetings", None),
        ("GET", f"/meetings/{m}", None),
        ("GET", f"/meetings/{m}/comments", None),
        ("GET", f"/meetings/{m}/votes", None),
        ("GET", f"/votes/{v}", None),
        ("GET", "/me/notifications", None),
        ("POST", f"/meetings/{m}/comments", {"text": "离开后的心得"}),
        ("POST", f"/meetings/{m}/online", None),
        ("POST", f"/votes/{v}/ballot", {"choices": [0]}),
        ("POST", f"/meetings/{m}/checkin", {"method": "mp_code"}),
        ("POST", f"/meetings/{m}/leave", {"reason": "出差"}),
    ]


async def send(api, token, method, path, body):
    return await api.request(method, API + path, headers=bearer(token), json=body)


async def effects(ctx, meeting, vote) -> tuple:
    """What the member could have changed: comments, the meeting's marks, ballots."""
    stored = await reload(ctx, meeting["_id"])
    ballots = await ctx.db[votes_model.BALLOTS].count_documents({"vote_id": vote["_id"]})
    return (len(await comments_model.after(ctx.db, meeting["_id"], None, 100)),
            stored["attendance"], stored["counts"], stored["leave"], ballots)


async def test_the_attack_a_token_kept_after_transfer_out_reads_and_writes_nothing(ctx, api, scene):
    city, me, token, meeting, vote = scene
    assert (await send(api, token, "GET", "/me/branch", None)).status_code == 200  # a member still
    before = await effects(ctx, meeting, vote)
    await members.set_state(ctx, actor(city, "sec_a1"), me["_id"], "transferred_out")
    for method, path, body in [*requests(city, meeting, vote), ("GET", "/me", None),
                               ("GET", "/me/timeline", None)]:
        answer = await send(api, token, method, path, body)
        assert answer.status_code == 401, (path, answer.text)
        assert answer.json()["error"]["code"] == "token_invalid"
        assert "将转出党员" not in answer.text and "同支部" not in answer.text
    assert await effects(ctx, meeting, vote) == before


@pytest.mark.parametrize("state", ["transferred_out", "stopped", "deceased"])
async def test_a_token_that_escaped_revocation_is_refused_by_the_state_check(ctx, api, scene, state):
    city, me, token, meeting, vote = scene
    before = await effects(ctx, meeting, vote)
    # The state changes without set_state (another process, a lost Redis call): no revocation.
    assert await members_model.update_if(ctx.db, me["_id"], {"state": "active"}, {"$set": {"state": state}})
    for method, path, body in requests(city, meeting, vote):
        # A token opened while the member was active, for each request its own.
        token = await mpsessions.open_session(ctx, openid=me["mp_openid"], unionid=None, session_key="k",
                                              member_id=me["_id"])
        answer = await send(api, token, method, path, body)
        assert answer.status_code in (401, 403), (path, answer.text)
        assert answer.json()["error"]["code"] in ("token_invalid", "member_inactive"), path
        assert "同支部" not in answer.text
    assert await effects(ctx, meeting, vote) == before


async def login(api, sandbox, openid) -> dict:
    code = await sandbox.login_code(openid)
    answer = await api.post(f"{API}/auth/login", json={"code": code})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_a_former_member_signs_in_to_their_own_profile_and_history_only(ctx, api, sandbox, scene):
    city, me, old_token, meeting, vote = scene
    await members.set_state(ctx, actor(city, "sec_a1"), me["_id"], "transferred_out")
    before = await effects(ctx, meeting, vote)
    session = await login(api, sandbox, me["mp_openid"])
    assert session["bound"] is True and session["member"]["active"] is False
    assert session["member"]["state_label"] == "已转出"
    token = session["token"]
    profile = await send(api, token, "GET", "/me", None)
    assert profile.status_code == 200, profile.text
    body = profile.json()
    assert body["active"] is False and body["state_label"] == "已转出" and body["birth_date"] is None
    clear_card = ctx.cipher.decrypt(me["id_card_enc"], purpose="id_card")
    assert "*" in body["id_card"] and clear_card not in profile.text
    assert body["phone"].startswith("*")
    history = await send(api, token, "GET", "/me/timeline", None)
    assert history.status_code == 200 and "member.state" in [e["kind"] for e in history.json()["items"]]
    for method, path, body in [*requests(city, meeting, vote), ("POST", "/me/phone", {"code": "abc"})]:
        answer = await send(api, token, method, path, body)
        assert answer.status_code == 403, (path, answer.text)
        assert answer.json()["error"]["code"] == "member_inactive", path
        assert "已转出" in answer.json()["error"]["message"] and "同支部" not in answer.text
    assert await effects(ctx, meeting, vote) == before
    assert (await send(api, old_token, "GET", "/me", None)).status_code == 401


async def test_coming_back_ends_the_former_session_and_a_new_one_is_a_members(ctx, api, sandbox, scene):
    city, me, _, _, _ = scene
    await members.set_state(ctx, actor(city, "sec_a1"), me["_id"], "stopped")
    former = (await login(api, sandbox, me["mp_openid"]))["token"]
    assert (await send(api, former, "GET", "/me/branch", None)).status_code == 403
    await members.set_state(ctx, actor(city, "sec_a1"), me["_id"], "active")
    assert (await send(api, former, "GET", "/me", None)).status_code == 401
    session = await login(api, sandbox, me["mp_openid"])
    assert session["member"]["active"] is True
    roster = await send(api, session["token"], "GET", "/me/branch", None)
    assert roster.status_code == 200 and "同支部1" in roster.text


async def test_a_former_session_whose_member_came_back_meanwhile_must_sign_in_again(ctx, api, sandbox, scene):
    city, me, _, _, _ = scene
    await members.set_state(ctx, actor(city, "sec_a1"), me["_id"], "deceased")
    former = (await login(api, sandbox, me["mp_openid"]))["token"]
    assert await members_model.update_if(ctx.db, me["_id"], {"state": "deceased"}, {"$set": {"state": "active"}})
    answer = await send(api, former, "GET", "/me", None)
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "token_invalid"


async def test_the_token_index_slides_with_use_so_leaving_finds_every_token(ctx, api, scene):
    city, me, _, _, _ = scene
    ctx.settings.api.token_ttl_seconds = 3
    token = await mpsessions.open_session(ctx, openid=me["mp_openid"], unionid=None, session_key="k",
                                          member_id=me["_id"])
    for _ in range(3):  # in use past the 3 s it was opened with
        await asyncio.sleep(1.1)
        assert (await send(api, token, "GET", "/me", None)).status_code == 200
    await members.set_state(ctx, actor(city, "sec_a1"), me["_id"], "transferred_out")
    assert await ctx.redis.exists(f"mp:session:{mpsessions.hash_token(token)}") == 0
    assert (await send(api, token, "GET", "/me", None)).status_code == 401


async def test_the_api_document_says_what_former_members_keep(api):
    document = (await api.get(f"{API}/openapi.json")).json()
    assert "member_inactive" in document["info"]["description"]
    assert "member_inactive" in document["paths"]["/api/v1/auth/login"]["post"]["description"]
    assert "打码" in document["paths"]["/api/v1/me"]["get"]["description"]
    assert "本人的历史" in document["paths"]["/api/v1/me/timeline"]["get"]["description"]
