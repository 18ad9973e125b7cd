"""Binding a WeChat openid to a member record (both channels), lockout, unbinding, audit."""

from __future__ import annotations

import asyncio

import pytest

from models import audit as audit_model
from models import members as members_model
from models import wechat as followers_model
from tests.conftest import SYSTEM, actor_of
from tests.factories import member_fields
from wxbackend.errors import Conflict, DomainError, Forbidden, InvalidInput, TooManyRequests
from wxbackend.services.orgs import binding, members

IP = "10.1.2.3"


async def new_member(ctx, city, name: str = "陈静", **fields) -> tuple[dict, dict]:
    raw = member_fields(name, gender="女", **fields)
    member = await members.create(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), raw)
    return member, raw


async def bind_entries(ctx, member_id) -> list[dict]:
    entries = await audit_model.for_target(ctx.db, member_id)
    return [e for e in reversed(entries) if e["action"] in ("member.bind", "member.unbind")]


async def test_bind_links_the_openid_and_is_audited_without_the_id_card(ctx, city):
    member, raw = await new_member(ctx, city)
    bound = await binding.bind(ctx, "oa", "o-1", "u-1", " 陈 静 ", raw["id_card"].lower(), raw["phone"], IP)
    assert bound["oa_openid"] == "o-1" and bound["unionid"] == "u-1" and bound["oa_bound_at"]
    assert await binding.member_for(ctx, "oa", "o-1") is not None
    entries = await bind_entries(ctx, member["_id"])
    assert [(e["action"], e["details"], e["ip"]) for e in entries] == [("member.bind", {"channel": "oa"}, IP)]
    assert raw["id_card"] not in repr(entries)


async def test_binding_again_with_the_same_openid_is_harmless(ctx, city):
    member, raw = await new_member(ctx, city)
    await binding.bind(ctx, "oa", "o-1", None, raw["name"], raw["id_card"], raw["phone"], IP)
    again = await binding.bind(ctx, "oa", "o-1", None, raw["name"], raw["id_card"], raw["phone"], IP)
    assert again["_id"] == member["_id"]
    assert len(await bind_entries(ctx, member["_id"])) == 1


async def test_the_mini_program_channel_is_the_same_rules(ctx, city):
    member, raw = await new_member(ctx, city)
    await binding.bind(ctx, "mp", "mp-1", "u-1", raw["name"], raw["id_card"], raw["phone"], IP)
    await binding.bind(ctx, "oa", "o-1", "u-1", raw["name"], raw["id_card"], raw["phone"], IP)
    doc = await members_model.get(ctx.db, member["_id"])
    assert (doc["mp_openid"], doc["oa_openid"], doc["unionid"]) == ("mp-1", "o-1", "u-1")
    with pytest.raises(InvalidInput):
        await binding.bind(ctx, "sms", "x", None, raw["name"], raw["id_card"], raw["phone"], IP)


@pytest.mark.parametrize("wrong", ["name", "id_card", "phone", "no_phone"])
async def test_wrong_data_is_refused_with_the_remaining_tries(ctx, city, wrong):
    member, raw = await new_member(ctx, city)
    other, _ = await new_member(ctx, city, "别人")
    form = {"name": raw["name"], "id_card": raw["id_card"], "phone": raw["phone"]}
    form.update({"name": {"name": "陈晶"}, "id_card": {"id_card": member_fields()["id_card"]},
                 "phone": {"phone": "13700000000"}, "no_phone": {"phone": ""}}[wrong])
    with pytest.raises(DomainError) as caught:
        await binding.bind(ctx, "oa", "o-1", None, form["name"], form["id_card"], form["phone"], IP)
    assert caught.value.code == "bind_mismatch"
    assert "还可尝试4次" in caught.value.message
    assert (await members_model.get(ctx.db, member["_id"])).get("oa_openid") is None
    assert other["_id"] != member["_id"]


async def test_phone_is_optional_when_the_record_has_none(ctx, city):
    member, raw = await new_member(ctx, city, phone="")
    bound = await binding.bind(ctx, "oa", "o-1", None, raw["name"], raw["id_card"], "", IP)
    assert bound["_id"] == member["_id"]


async def test_malformed_input_does_not_cost_a_try(ctx, city):
    _, raw = await new_member(ctx, city)
    for _ in range(8):
        with pytest.raises(InvalidInput):
            await binding.bind(ctx, "oa", "o-1", None, raw["name"], "12345", "", IP)
    bound = await binding.bind(ctx, "oa", "o-1", None, raw["name"], raw["id_card"], raw["phone"], IP)
    assert bound["oa_openid"] == "o-1"


async def test_five_wrong_tries_lock_even_the_right_data(ctx, city):
    member, raw = await new_member(ctx, city)
    for attempt in range(1, 6):
        with pytest.raises(DomainError) as caught:
            await binding.bind(ctx, "oa", "o-1", None, "错名", raw["id_card"], raw["phone"], IP)
        assert caught.value.code == ("bind_locked" if attempt == 5 else "bind_mismatch")
    with pytest.raises(TooManyRequests) as caught:
        await binding.bind(ctx, "oa", "o-1", None, raw["name"], raw["id_card"], raw["phone"], IP)
    assert caught.value.code == "bind_locked" and "60分钟" in caught.value.message
    assert 3500 < caught.value.retry_after <= 3600
    assert (await members_model.get(ctx.db, member["_id"])).get("oa_openid") is None
    # Another openid is not locked; the lock is per openid.
    assert (await binding.bind(ctx, "oa", "o-2", None, raw["name"], raw["id_card"], raw["phone"], IP))


async def test_parallel_guesses_cannot_exceed_the_limit(ctx, city):
    _, raw = await new_member(ctx, city)
    guesses = [binding.bind(ctx, "oa", "o-1", None, f"错{i}", raw["id_card"], raw["phone"], IP)
               for i in range(12)]
    results = await asyncio.gather(*guesses, return_exceptions=True)
    codes = sorted(r.code for r in results)
    assert codes.count("bind_mismatch") == 4 and codes.count("bind_locked") == 8


async def test_a_right_answer_resets_the_count(ctx, city):
    _, raw = await new_member(ctx, city)
    for _ in range(4):
        with pytest.raises(DomainError):
            await binding.bind(ctx, "oa", "o-1", None, "错名", raw["id_card"], raw["phone"], IP)
    await binding.bind(ctx, "oa", "o-1", None, raw["name"], raw["id_card"], raw["phone"], IP)
    assert await ctx.redis.exists("wx:bind:fail:oa:o-1") == 0


async def test_openid_already_bound_to_another_member(ctx, city):
    _, first = await new_member(ctx, city, "甲")
    second_member, second = await new_member(ctx, city, "乙")
    await binding.bind(ctx, "oa", "o-1", None, first["name"], first["id_card"], first["phone"], IP)
    with pytest.raises(Conflict) as caught:
        await binding.bind(ctx, "oa", "o-1", None, second["name"], second["id_card"], second["phone"], IP)
    assert caught.value.code == "openid_bound_elsewhere"
    assert (await members_model.get(ctx.db, second_member["_id"])).get("oa_openid") is None


async def test_member_already_bound_to_another_openid_is_answered_as_a_wrong_try(ctx, city):
    # A distinct answer here confirmed a guessed ID-card number (tests/test_binding_limits.py).
    member, raw = await new_member(ctx, city)
    await binding.bind(ctx, "oa", "o-1", None, raw["name"], raw["id_card"], raw["phone"], IP)
    with pytest.raises(DomainError) as caught:
        await binding.bind(ctx, "oa", "o-2", None, raw["name"], raw["id_card"], raw["phone"], IP)
    assert caught.value.code == "bind_mismatch" and "还可尝试4次" in caught.value.message
    assert "已绑定" not in caught.value.message
    assert (await members_model.get(ctx.db, member["_id"]))["oa_openid"] == "o-1"
    assert await ctx.redis.get("wx:bind:fail:oa:o-2") == b"1"


async def test_two_openids_racing_for_one_member_one_wins(ctx, city):
    member, raw = await new_member(ctx, city)
    results = await asyncio.gather(
        *(binding.bind(ctx, "oa", f"o-{i}", None, raw["name"], raw["id_card"], raw["phone"], IP)
          for i in range(6)), return_exceptions=True)
    winners = [r for r in results if isinstance(r, dict)]
    assert len(winners) == 1
    # The losers are answered as a wrong try is: nothing says the data was right.
    assert all(isinstance(r, DomainError) and r.code == "bind_mismatch"
               for r in results if not isinstance(r, dict))
    assert (await members_model.get(ctx.db, member["_id"]))["oa_openid"] == winners[0]["oa_openid"]
    assert len(await bind_entries(ctx, member["_id"])) == 1


async def test_an_inactive_member_cannot_bind(ctx, city):
    member, raw = await new_member(ctx, city)
    await members.set_state(ctx, SYSTEM, member["_id"], "transferred_out")
    with pytest.raises(DomainError) as caught:
        await binding.bind(ctx, "oa", "o-1", None, raw["name"], raw["id_card"], raw["phone"], IP)
    # As a wrong try: the state of a record is not told to whoever types its number.
    assert caught.value.code == "bind_mismatch" and "已转出" not in caught.value.message
    assert (await members_model.get(ctx.db, member["_id"])).get("oa_openid") is None


async def test_the_bound_account_of_a_member_who_left_is_told_the_state(ctx, city):
    member, raw = await new_member(ctx, city)
    await binding.bind(ctx, "oa", "o-1", None, raw["name"], raw["id_card"], raw["phone"], IP)
    await members.set_state(ctx, SYSTEM, member["_id"], "transferred_out")
    with pytest.raises(DomainError) as caught:  # their own account, their own data: nothing to hide
        await binding.bind(ctx, "oa", "o-1", None, raw["name"], raw["id_card"], raw["phone"], IP)
    assert caught.value.code == "member_inactive" and "已转出" in caught.value.message


async def test_follow_state_moves_to_the_member_and_back(ctx, city):
    member, raw = await new_member(ctx, city)
    await binding.record_follow(ctx, "o-1", "poster")
    bound = await binding.bind(ctx, "oa", "o-1", None, raw["name"], raw["id_card"], raw["phone"], IP)
    assert bound["oa_following"] is True
    assert await followers_model.get(ctx.db, "o-1") is None
    await binding.unbind(ctx, actor_of(city, "sec_a1"), member["_id"], "oa")
    assert (await followers_model.get(ctx.db, "o-1"))["following"] is True


async def test_secretary_unbinds_and_it_is_audited(ctx, city):
    member, raw = await new_member(ctx, city)
    await binding.bind(ctx, "oa", "o-1", "u-1", raw["name"], raw["id_card"], raw["phone"], IP)
    await binding.bind(ctx, "mp", "mp-1", "u-1", raw["name"], raw["id_card"], raw["phone"], IP)
    await binding.unbind(ctx, actor_of(city, "sec_a1"), str(member["_id"]), "oa")
    doc = await members_model.get(ctx.db, member["_id"])
    assert "oa_openid" not in doc and "oa_bound_at" not in doc
    assert doc["unionid"] == "u-1"  # the mini-program is still bound to that WeChat account
    await binding.unbind(ctx, actor_of(city, "sec_a1"), member["_id"], "mp")
    doc = await members_model.get(ctx.db, member["_id"])
    assert "mp_openid" not in doc and "unionid" not in doc
    entries = await bind_entries(ctx, member["_id"])
    assert [(e["action"], e["details"]["channel"], e["actor"]["name"]) for e in entries][-2:] == [
        ("member.unbind", "oa", "sec_a1"), ("member.unbind", "mp", "sec_a1")]
    # The member can bind again, even with a new WeChat account.
    assert await binding.bind(ctx, "oa", "o-new", None, raw["name"], raw["id_card"], raw["phone"], IP)


async def test_unbind_needs_the_permission_in_scope(ctx, city):
    member, raw = await new_member(ctx, city)
    await binding.bind(ctx, "oa", "o-1", None, raw["name"], raw["id_card"], raw["phone"], IP)
    for user in ("auditor_a", "west"):
        with pytest.raises(Forbidden):
            await binding.unbind(ctx, actor_of(city, user), member["_id"], "oa")
    assert (await members_model.get(ctx.db, member["_id"]))["oa_openid"] == "o-1"
    with pytest.raises(DomainError) as caught:
        await binding.unbind(ctx, actor_of(city, "east"), member["_id"], "mp")
    assert caught.value.code == "not_bound"


async def test_identity_cache_sees_binds_and_unbinds_of_other_processes(ctx, city, servers):
    from wxbackend.context import AppContext

    _, raw = await new_member(ctx, city)
    other = await AppContext.connect(ctx.settings, servers.mongodb_uri, servers.redis_url,
                                     database=ctx.db.name)  # another server process
    try:
        assert await binding.identity_for(other, "oa", "o-1") is None  # cached: unbound
        await binding.bind(ctx, "oa", "o-1", None, raw["name"], raw["id_card"], raw["phone"], IP)
        assert (await binding.identity_for(ctx, "oa", "o-1"))["name"] == raw["name"]  # at once here
        await asyncio.sleep(binding.IDENTITY_RECHECK + 0.1)
        seen = await binding.identity_for(other, "oa", "o-1")  # within a second elsewhere
        assert seen["name"] == raw["name"] and "id_card_enc" not in seen and "phone_enc" not in seen
        await binding.unbind(ctx, actor_of(city, "sec_a1"), seen["_id"], "oa")
        await asyncio.sleep(binding.IDENTITY_RECHECK + 0.1)
        assert await binding.identity_for(other, "oa", "o-1") is None
    finally:
        await other.close()
