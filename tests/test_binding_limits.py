"""Guessing a member's identity at binding: limits per address, per name, city-wide; no oracle.

The review's attack: the wrong-ID-card lockout was per (channel, openid) only,
so each new WeChat account got five more guesses at a member's ID-card number,
and ``409 member_bound_elsewhere`` confirmed a right guess. These tests replay
it and check the refusals, that nothing changed, and what the secretary is told.
"""

from __future__ import annotations

import asyncio

import pytest

from models import members as members_model
from tests.conftest import SYSTEM, actor_of
from tests.factories import member_fields
from tests.notifykit import drain
from wxbackend.errors import Conflict, DomainError, InvalidInput, TooManyRequests
from wxbackend.services.notify import inbox
from wxbackend.services.orgs import bind_limits, binding, members

IP = "10.9.8.7"


async def new_member(ctx, city, name: str = "陈静", org: str = "branch_a1", **fields) -> tuple[dict, dict]:
    raw = member_fields(name, gender="女", **fields)
    member = await members.create(ctx, actor_of(city, "sec_a1"), city.org(org), raw)
    return member, raw


def wrong_card() -> str:
    return member_fields()["id_card"]


async def refusal(coro) -> DomainError:
    with pytest.raises(DomainError) as caught:
        await coro
    return caught.value


async def notices_of(ctx, city, user: str = "sec_a1") -> list[tuple[str, str]]:
    items, _ = await inbox(ctx, city.users[user]["_id"], None, 50)
    return [(i.doc["kind"], i.message.get("summary", "")) for i in items]


async def counter(ctx, key: str) -> int:
    return int(await ctx.redis.get(key) or 0)


async def test_the_attack_each_new_account_gets_no_more_guesses_at_one_member(ctx, city):
    member, raw = await new_member(ctx, city)
    limit = ctx.settings.wechat.bind_target_max_failures
    answers = []
    for i in range(limit):  # a fresh WeChat account and address for each guess
        answers.append(await refusal(binding.bind(ctx, "oa", f"o-fresh-{i}", None, raw["name"], wrong_card(),
                                                  "", f"10.0.{i}.1")))
    assert [a.code for a in answers] == ["bind_mismatch"] * (limit - 1) + ["bind_locked"]
    assert "24小时" in answers[-1].message and answers[-1].retry_after > 86000
    # Even the right data, from yet another account and address, is refused now.
    right = await refusal(binding.bind(ctx, "oa", "o-fresh-x", None, raw["name"], raw["id_card"],
                                       raw["phone"], "10.1.1.1"))
    assert isinstance(right, TooManyRequests) and right.code == "bind_locked"
    assert (await members_model.get(ctx.db, member["_id"])).get("oa_openid") is None
    # ... and the branch secretary is told, once.
    await drain(ctx)
    notices = await notices_of(ctx, city)
    assert [k for k, _ in notices] == ["binding_locked"]
    assert "陈静" in notices[0][1] and "24小时" in notices[0][1] and raw["id_card"] not in notices[0][1]
    # Another member is not locked.
    _, other = await new_member(ctx, city, "李红")
    assert await binding.bind(ctx, "oa", "o-other", None, other["name"], other["id_card"], other["phone"], IP)


async def test_parallel_guesses_from_many_accounts_cannot_exceed_the_name_limit(ctx, city):
    member, raw = await new_member(ctx, city)
    guesses = [binding.bind(ctx, "mp", f"mp-{i}", None, raw["name"], wrong_card(), "", f"10.2.{i}.1")
               for i in range(30)]
    results = await asyncio.gather(*guesses, return_exceptions=True)
    codes = [r.code for r in results]
    limit = ctx.settings.wechat.bind_target_max_failures
    assert codes.count("bind_mismatch") == limit - 1 and codes.count("bind_locked") == 30 - limit + 1
    name_key = bind_limits.NAME_KEY.format(bidx=bind_limits.name_index(ctx, raw["name"]))
    assert await counter(ctx, name_key) == limit
    assert (await members_model.get(ctx.db, member["_id"])).get("mp_openid") is None


async def test_a_right_guess_at_a_bound_member_answers_as_a_wrong_one_and_tells_the_secretary(ctx, city):
    member, raw = await new_member(ctx, city)
    await binding.bind(ctx, "oa", "o-owner", None, raw["name"], raw["id_card"], raw["phone"], "10.3.0.1")
    right = await refusal(binding.bind(ctx, "oa", "o-thief", None, raw["name"], raw["id_card"], raw["phone"],
                                       "10.3.0.2"))
    wrong = await refusal(binding.bind(ctx, "oa", "o-thief2", None, raw["name"], wrong_card(), raw["phone"],
                                       "10.3.0.3"))
    assert (type(right), right.code, right.status, right.message) == (
        type(wrong), wrong.code, wrong.status, wrong.message)
    assert right.code == "bind_mismatch" and "还可尝试4次" in right.message
    # It cost a try like a wrong one (the next answer counts down the same way).
    again = await refusal(binding.bind(ctx, "oa", "o-thief", None, raw["name"], raw["id_card"], raw["phone"],
                                       "10.3.0.2"))
    assert "还可尝试3次" in again.message
    assert (await members_model.get(ctx.db, member["_id"]))["oa_openid"] == "o-owner"
    await drain(ctx)
    notices = await notices_of(ctx, city)
    # Two tries, one notice: at most one a member a day.
    assert [k for k, _ in notices] == ["binding_attempt_bound_elsewhere"]
    assert "陈静" in notices[0][1] and "解除原绑定" in notices[0][1]


async def test_a_right_guess_at_a_member_who_left_answers_as_a_wrong_one(ctx, city):
    member, raw = await new_member(ctx, city)
    await members.set_state(ctx, SYSTEM, member["_id"], "deceased")
    right = await refusal(binding.bind(ctx, "oa", "o-a", None, raw["name"], raw["id_card"], raw["phone"], IP))
    wrong = await refusal(binding.bind(ctx, "oa", "o-b", None, raw["name"], wrong_card(), raw["phone"], IP))
    assert (right.code, right.status, right.message) == (wrong.code, wrong.status, wrong.message)
    assert "去世" not in right.message
    assert (await members_model.get(ctx.db, member["_id"])).get("oa_openid") is None


async def test_an_account_already_bound_learns_nothing_about_other_records(ctx, city):
    _, mine = await new_member(ctx, city, "甲")
    other, theirs = await new_member(ctx, city, "乙")
    await binding.bind(ctx, "oa", "o-1", None, mine["name"], mine["id_card"], mine["phone"], IP)
    ip_key = bind_limits.IP_KEY.format(ip=IP)
    before = await counter(ctx, ip_key)
    right = await refusal(binding.bind(ctx, "oa", "o-1", None, theirs["name"], theirs["id_card"],
                                       theirs["phone"], IP))
    wrong = await refusal(binding.bind(ctx, "oa", "o-1", None, theirs["name"], wrong_card(), "", IP))
    assert isinstance(right, Conflict) and (right.code, right.message) == (wrong.code, wrong.message)
    assert right.code == "openid_bound_elsewhere"
    assert await counter(ctx, ip_key) == before and await counter(ctx, "wx:bind:fail:oa:o-1") == 0
    assert (await members_model.get(ctx.db, other["_id"])).get("oa_openid") is None


async def test_one_address_gets_a_limited_number_of_wrong_tries_over_all_accounts_and_names(ctx, city):
    member, raw = await new_member(ctx, city)
    limit = ctx.settings.wechat.bind_ip_max_failures
    for i in range(limit):
        await refusal(binding.bind(ctx, "oa", f"o-{i}", None, f"路人{i}", wrong_card(), "", IP))
    locked = await refusal(binding.bind(ctx, "oa", "o-new", None, raw["name"], raw["id_card"], raw["phone"], IP))
    assert locked.code == "bind_locked" and "当前网络" in locked.message
    assert (await members_model.get(ctx.db, member["_id"])).get("oa_openid") is None
    assert await binding.bind(ctx, "oa", "o-new", None, raw["name"], raw["id_card"], raw["phone"], "10.4.0.1")


async def test_an_ipv6_address_is_counted_by_its_64_prefix(ctx, city):
    _, raw = await new_member(ctx, city)
    ctx.settings.wechat.bind_ip_max_failures = 3
    for i in range(3):
        await refusal(binding.bind(ctx, "mp", f"mp-{i}", None, f"路人{i}", wrong_card(), "",
                                   f"2001:db8:1:2::{i + 1:x}"))
    locked = await refusal(binding.bind(ctx, "mp", "mp-x", None, raw["name"], raw["id_card"], raw["phone"],
                                        "2001:db8:1:2:ffff:ffff:ffff:ffff"))
    assert locked.code == "bind_locked" and "当前网络" in locked.message
    assert await binding.bind(ctx, "mp", "mp-x", None, raw["name"], raw["id_card"], raw["phone"],
                              "2001:db8:1:3::1")
    assert bind_limits.clean_ip("::ffff:10.1.2.3") == "10.1.2.3" and bind_limits.clean_ip("nonsense") == "-"


async def test_the_city_wide_brake_stops_a_spread_out_attack(ctx, city):
    member, raw = await new_member(ctx, city)
    ctx.settings.wechat.bind_total_max_failures = 3
    for i in range(3):
        await refusal(binding.bind(ctx, "oa", f"o-{i}", None, f"路人{i}", wrong_card(), "", f"10.5.{i}.1"))
    locked = await refusal(binding.bind(ctx, "oa", "o-x", None, raw["name"], raw["id_card"], raw["phone"],
                                        "10.6.0.1"))
    assert locked.code == "bind_locked" and "系统已暂停绑定" in locked.message
    assert (await members_model.get(ctx.db, member["_id"])).get("oa_openid") is None


async def test_a_right_answer_gives_its_counts_back(ctx, city):
    _, raw = await new_member(ctx, city)
    await refusal(binding.bind(ctx, "oa", "o-1", None, raw["name"], wrong_card(), raw["phone"], IP))
    await binding.bind(ctx, "oa", "o-1", None, raw["name"], raw["id_card"], raw["phone"], IP)
    name_key = bind_limits.NAME_KEY.format(bidx=bind_limits.name_index(ctx, raw["name"]))
    assert [await counter(ctx, k) for k in (bind_limits.IP_KEY.format(ip=IP), name_key,
                                            bind_limits.TOTAL_KEY)] == [1, 1, 1]
    assert await ctx.redis.exists("wx:bind:fail:oa:o-1") == 0
    assert raw["name"] not in repr(await ctx.redis.keys("wx:bind:*"))  # no clear names in Redis


async def test_a_locked_name_nobody_has_answers_alike_and_tells_nobody(ctx, city):
    _, raw = await new_member(ctx, city)
    ctx.settings.wechat.bind_target_max_failures = 2
    answers = [await refusal(binding.bind(ctx, "oa", f"o-{i}", None, name, wrong_card(), "", f"10.7.{i}.1"))
               for i, name in enumerate(["无此人", "无此人", raw["name"], raw["name"]])]
    assert [(a.code, a.message) for a in answers[:2]] == [(a.code, a.message) for a in answers[2:]]
    await drain(ctx)
    assert [k for k, _ in await notices_of(ctx, city)] == ["binding_locked"]  # 陈静's only


@pytest.mark.parametrize("name", ["陈\u200b静", "陈\u202e静", "陈\x00静"])
async def test_invisible_characters_in_the_name_are_refused_for_free(ctx, city, name):
    _, raw = await new_member(ctx, city)
    with pytest.raises(InvalidInput):
        await binding.bind(ctx, "oa", "o-1", None, name, raw["id_card"], raw["phone"], IP)
    assert await ctx.redis.keys("wx:bind:fail*") == []


async def test_width_and_middle_dot_variants_of_a_name_are_one_name(ctx, city):
    member, raw = await new_member(ctx, city, "阿依古丽·买买提")
    bound = await binding.bind(ctx, "oa", "o-1", None, "阿依古丽•买买提", raw["id_card"], raw["phone"], IP)
    assert bound["_id"] == member["_id"]
    assert binding.clean_name("阿依古丽．买买提") == binding.clean_name("阿依古丽・买买提") == "阿依古丽·买买提"


async def test_the_official_account_page_shows_a_bound_member_as_a_wrong_try(ctx, city, web):
    import json

    import tornado.web

    member, raw = await new_member(ctx, city)
    await binding.bind(ctx, "oa", "o-owner", None, raw["name"], raw["id_card"], raw["phone"], IP)
    pages = []
    for openid, card in (("o-guess1", raw["id_card"]), ("o-guess2", wrong_card())):
        web.cookies["wxb_oa_openid"] = tornado.web.create_signed_value(
            ctx.settings.security.secret_key, "wxb_oa_openid",
            json.dumps({"openid": openid, "unionid": ""})).decode()
        pages.append(await web.post_form("/wechat/oa/bind", {"name": raw["name"], "id_card": card,
                                                              "phone": raw["phone"]}))
    right, wrong = pages
    assert right.status_code == wrong.status_code == 422
    message = bind_limits.mismatch_error(4).message
    assert message in right.text and message in wrong.text and "已绑定其他微信号" not in right.text
    assert (await members_model.get(ctx.db, member["_id"]))["oa_openid"] == "o-owner"
