"""Masked personal data stays masked: no page, search, form or duplicate check gives
away the hidden digits of an ID-card number or phone.

Each attack of the security review is reproduced as it was run (over real HTTP
where it was), then the refusal (status and code) is asserted together with
what must not have happened: a clear number or birth date in a response, a
changed record, an audit entry that should not exist (or a missing one).
"""

from __future__ import annotations

import asyncio
from datetime import date

import pytest

from models import orgs as orgs_model
from tests.conftest import ADMIN_PASSWORD, SYSTEM, actor_of
from tests.factories import member_fields
from tests.test_import import run, table, xlsx
from wxbackend.errors import Conflict, Forbidden, TooManyRequests
from wxbackend.idcard import check_digit
from wxbackend.services.orgs import importer, lookups, members

BIRTH = date(1985, 3, 14)


async def audit_log(ctx, city) -> list[dict]:
    return await ctx.db.audit_log.find({"org_ancestors": city.org("root")}).to_list()


async def actions(ctx, city, action: str) -> list[dict]:
    return [e for e in await audit_log(ctx, city) if e["action"] == action]


async def member_in_a1(ctx, city, name: str = "目标党员") -> tuple[dict, dict]:
    fields = member_fields(name, birth=BIRTH)
    return await members.create(ctx, SYSTEM, city.org("branch_a1"), fields), fields


def candidates(masked_card: str, birth: date) -> list[str]:
    """What the reviewer built from "3502**********0011" and the birth date beside it:
    the two district digits, filtered by the visible check digit (about nine)."""
    head, tail = masked_card[:4], masked_card[-4:]
    found = []
    for district in range(100):
        first17 = f"{head}{district:02d}{birth:%Y%m%d}{tail[:3]}"
        if check_digit(first17) == tail[3]:
            found.append(first17 + tail[3])
    return found


def leaks(text: str, fields: dict) -> list[str]:
    """The parts of a member's numbers that a masked view must not contain."""
    card, phone = fields["id_card"], fields["phone"]
    secrets = {"ID-card number": card, "hidden ID digits": card[4:14], "phone": phone,
               "hidden phone digits": phone[:7], "birth date": fields["birth_date"],
               "birth date digits": card[6:14]}
    return [name for name, value in secrets.items() if value in text]


def error_code(response) -> str:
    marker = 'data-code="'
    start = response.text.find(marker)
    return response.text[start + len(marker):response.text.find('"', start + len(marker))] if start >= 0 else ""


# -- the masked view ----------------------------------------------------------------

async def test_pages_for_an_admin_without_unmask_show_no_more_than_the_mask(ctx, city, web):
    member, fields = await member_in_a1(ctx, city)
    await web.login("auditor_a", ADMIN_PASSWORD)
    district = f"/admin/orgs/{city.org('district_a')}"
    pages = [f"/admin/members/{member['_id']}", f"/admin/orgs/{city.org('branch_a1')}",
             f"{district}/members", f"{district}/members?q=目标"]
    for url in pages:
        page = await web.get(url)
        assert page.status_code == 200 and "目标党员" in page.text, url
        assert leaks(page.text, fields) == [], url
        assert "*******" + fields["phone"][-4:] in page.text, url
    detail = await web.get(pages[0])
    assert fields["id_card"][:4] + "*" * 10 + fields["id_card"][-4:] in detail.text
    assert "1985年" in detail.text  # the birth year, not the date


async def test_the_unmasked_view_is_the_only_one_with_the_full_birth_date(ctx, city, web):
    member, fields = await member_in_a1(ctx, city)
    await web.login("sec_a1", ADMIN_PASSWORD)
    assert leaks((await web.get(f"/admin/members/{member['_id']}")).text, fields) == []
    posted = await web.post_form(f"/admin/members/{member['_id']}/unmask")
    assert posted.status_code == 303  # post/redirect/get: the clear view is the GET after it
    shown = await web.get(posted.headers["location"])
    assert shown.status_code == 200
    assert fields["id_card"] in shown.text and fields["birth_date"] in shown.text
    assert len(await actions(ctx, city, "member.unmask")) == 1


# -- exact search ------------------------------------------------------------------

async def test_auditor_cannot_recover_a_masked_id_card_by_exact_search(ctx, city, web):
    """The review's attack: nine candidates from the masked number and the birth date,
    each tried against the exact search. Every try is refused alike."""
    member, fields = await member_in_a1(ctx, city)
    tries = candidates(fields["id_card"][:4] + "*" * 10 + fields["id_card"][-4:], BIRTH)
    assert fields["id_card"] in tries and 5 <= len(tries) <= 12
    await web.login("auditor_a", ADMIN_PASSWORD)
    url = f"/admin/orgs/{city.org('district_a')}/members"
    before = await audit_log(ctx, city)
    answers = set()  # (status, code) pairs: the pages differ only in their random XSRF masks
    for number in [*tries, fields["phone"]]:
        by_get = await web.get(f"{url}?q={number}")
        by_post = await web.post_form(url, {"q": number})
        assert (by_get.status_code, error_code(by_get)) == (400, "lookup_by_post")
        assert (by_post.status_code, error_code(by_post)) == (403, "lookup_not_allowed")
        for response in (by_get, by_post):
            assert "目标党员" not in response.text and str(member["_id"]) not in response.text
        answers.add((by_get.status_code, error_code(by_get), by_post.status_code, error_code(by_post)))
    assert len(answers) == 1  # the right number is answered exactly as the wrong ones
    assert await audit_log(ctx, city) == before
    with pytest.raises(Forbidden) as caught:
        await members.search(ctx, actor_of(city, "auditor_a"), city.org("district_a"), fields["id_card"])
    assert caught.value.code == "lookup_not_allowed"


async def test_exact_search_is_a_post_and_audited_without_the_number(ctx, city, web):
    member, fields = await member_in_a1(ctx, city)
    await web.login("east", ADMIN_PASSWORD)
    url = f"/admin/orgs/{city.org('district_a')}/members"
    assert error_code(await web.get(f"{url}?q={fields['id_card']}")) == "lookup_by_post"
    assert await actions(ctx, city, "member.lookup") == []
    for number in (f" {fields['id_card']} ", fields["phone"], "350203198001010000"):
        found = await web.post_form(url, {"q": number})
        assert found.status_code == 200
        assert ("目标党员" in found.text) == (number != "350203198001010000")
        assert leaks(found.text, fields) == []
    entries = sorted(await actions(ctx, city, "member.lookup"), key=lambda e: e["_id"])
    assert [(e["details"]["by"], e["details"]["found"], e["details"]["members"]) for e in entries] == [
        ("id_card", 1, [member["_id"]]), ("phone", 1, [member["_id"]]), ("id_card", 0, [])]
    assert all(e["actor"]["name"] == "east" and e["org_id"] == city.org("district_a") for e in entries)
    for secret in (fields["id_card"], fields["phone"], "350203198001010000"):
        assert secret not in repr(entries)
    by_name = await web.post_form(url, {"q": "目标"})
    assert by_name.status_code == 302 and by_name.headers["location"].endswith("?q=%E7%9B%AE%E6%A0%87")
    assert len(await actions(ctx, city, "member.lookup")) == 3  # names are not lookups


async def test_exact_searches_are_limited_per_admin(ctx, city, web):
    ctx.settings.members.lookup_max = 3
    _, fields = await member_in_a1(ctx, city)
    east = actor_of(city, "east")
    results = await asyncio.gather(*[members.search(ctx, east, city.org("district_a"), fields["id_card"])
                                     for _ in range(8)], return_exceptions=True)
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(refused) == 5 and all(isinstance(r, TooManyRequests) and r.code == "too_many_lookups"
                                     for r in refused)
    assert len(await actions(ctx, city, "member.lookup")) == 3  # a refused search looked at nothing
    await web.login("east", ADMIN_PASSWORD)
    spent = await web.post_form(f"/admin/orgs/{city.org('district_a')}/members", {"q": fields["phone"]})
    assert (spent.status_code, error_code(spent)) == (429, "too_many_lookups")
    assert int(spent.headers["Retry-After"]) > 0 and "目标党员" not in spent.text
    # Per admin: the city's administrator still has all of theirs.
    found = await members.search(ctx, actor_of(city, "city"), city.org("root"), fields["id_card"])
    assert [m["name"] for m in found] == ["目标党员"]
    assert len(await actions(ctx, city, "member.lookup")) == 4


# -- numbers registered elsewhere --------------------------------------------------

async def west_member(ctx, city) -> tuple[dict, dict]:
    fields = member_fields("西区党员", birth=BIRTH)
    return await members.create(ctx, actor_of(city, "west"), city.org("branch_b1"), fields), fields


async def test_creating_a_member_registered_elsewhere_says_so_without_where_and_is_audited(ctx, city, web):
    theirs, fields = await west_member(ctx, city)
    await web.login("sec_a1", ADMIN_PASSWORD)
    response = await web.post_form(f"/admin/orgs/{city.org('branch_a1')}/members/new",
                                   dict(fields, name="冒名党员"))
    assert (response.status_code, error_code(response)) == (409, "id_card_exists")
    assert "已在本平台登记" in response.text
    for secret in ("西区", "西区党员", str(theirs["_id"]), fields["phone"][-4:]):
        assert secret not in response.text
    assert await ctx.db.members.count_documents({"org_id": city.org("branch_a1")}) == 0
    assert (await orgs_model.get(ctx.db, city.org("branch_a1")))["member_count"] == 0
    [entry] = await actions(ctx, city, "member.duplicate")
    assert entry["actor"]["name"] == "sec_a1" and entry["org_id"] == city.org("branch_a1")
    assert entry["details"] == {"via": "create", "found": 1, "outside_scope": 1, "members": [theirs["_id"]]}
    assert fields["id_card"] not in repr(entry)


async def test_editing_to_a_number_registered_elsewhere_changes_nothing_and_is_audited(ctx, city):
    theirs, fields = await west_member(ctx, city)
    mine, _ = await member_in_a1(ctx, city)
    before = await ctx.db.members.find_one({"_id": mine["_id"]})
    with pytest.raises(Conflict) as caught:
        await members.update(ctx, actor_of(city, "sec_a1"), mine["_id"], dict(member_fields("目标党员"),
                                                                               id_card=fields["id_card"]))
    assert caught.value.code == "id_card_exists" and "西区" not in caught.value.message
    assert await ctx.db.members.find_one({"_id": mine["_id"]}) == before
    [entry] = await actions(ctx, city, "member.duplicate")
    assert entry["details"]["via"] == "update" and entry["details"]["members"] == [theirs["_id"]]


async def test_numbers_found_elsewhere_spend_the_lookup_budget(ctx, city):
    ctx.settings.members.lookup_max = 2
    _, fields = await west_member(ctx, city)
    sec = actor_of(city, "sec_a1")
    for name in ("冒名一", "冒名二"):
        with pytest.raises(Conflict):
            await members.create(ctx, sec, city.org("branch_a1"), dict(fields, name=name))
    # Spent: a create is refused before it can answer, whether the number is taken or not.
    for probe in (dict(fields, name="冒名三"), member_fields("新党员")):
        with pytest.raises(TooManyRequests) as caught:
            await members.create(ctx, sec, city.org("branch_a1"), probe)
        assert caught.value.code == "too_many_lookups"
    with pytest.raises(TooManyRequests):
        await run(ctx, city, xlsx(table([member_fields("导入党员")])))
    # Parallel probes are bounded too: each holds its lookup while it writes.
    await ctx.redis.delete(lookups.BUDGET_KEY.format(actor=sec.id))
    probes = await asyncio.gather(*[members.create(ctx, sec, city.org("branch_a1"), dict(fields, name=f"并发{i}"))
                                    for i in range(6)], return_exceptions=True)
    assert sorted(type(p).__name__ for p in probes) == ["Conflict"] * 2 + ["TooManyRequests"] * 4
    assert await ctx.db.members.count_documents({"org_id": city.org("branch_a1")}) == 0
    assert len(await actions(ctx, city, "member.duplicate")) == 4
    # Duplicates inside the admin's own scope are mistakes, not probes: audited, not counted.
    ctx.settings.members.lookup_max = 1
    await ctx.redis.delete(lookups.BUDGET_KEY.format(actor=sec.id))
    own = member_fields("本支部党员")
    await members.create(ctx, sec, city.org("branch_a1"), own)
    for _ in range(3):
        with pytest.raises(Conflict):
            await members.create(ctx, sec, city.org("branch_a1"), dict(own, name="重复录入"))
    await members.create(ctx, sec, city.org("branch_a1"), member_fields("又一名党员"))


async def test_import_of_numbers_registered_elsewhere_is_audited_and_bounded(ctx, city):
    ctx.settings.members.lookup_max = 2
    registered = [await west_member(ctx, city) for _ in range(3)]
    rows = [member_fields("新党员一"), *(dict(f, name=f"冒名{i}") for i, (_, f) in enumerate(registered[:1]))]
    result = await run(ctx, city, xlsx(table(rows)))
    assert [(e.row, e.code) for e in result.errors] == [(3, "member_out_of_scope")]
    [entry] = await actions(ctx, city, "member.duplicate")
    assert entry["details"] == {"via": "import", "found": 1, "outside_scope": 1,
                                "members": [registered[0][0]["_id"]]}
    assert entry["org_id"] == city.org("branch_a1") and registered[0][1]["id_card"] not in repr(entry)
    # Two more than the one answer left: the file is refused without naming a row.
    rows = [member_fields("新党员二"), *(dict(f, name="冒名") for _, f in registered[1:])]
    result = await run(ctx, city, xlsx(table(rows)))
    assert [(e.row, e.code) for e in result.errors] == [(None, "too_many_lookups")]
    assert "第" not in result.summary().split("\n", 1)[1]
    assert len(await actions(ctx, city, "member.duplicate")) == 2
    with pytest.raises(TooManyRequests):
        await importer.import_file(ctx, actor_of(city, "sec_a1"), xlsx(table([member_fields("再试")])),
                                   "名册.xlsx", target_org_id=city.org("branch_a1"))
    assert await ctx.db.members.count_documents({"org_id": city.org("branch_a1")}) == 0


# -- the edit form -----------------------------------------------------------------

async def test_opening_the_edit_form_reveals_nothing_and_writes_no_audit_entry(ctx, city, web):
    """A GET, which a link on another site can trigger with the session cookie (SameSite=Lax)."""
    member, fields = await member_in_a1(ctx, city)
    await web.login("sec_a1", ADMIN_PASSWORD)
    before = await audit_log(ctx, city)
    form = await web.get(f"/admin/members/{member['_id']}/edit", headers={"Referer": "https://evil.example/"})
    assert form.status_code == 200 and "修改党员信息" in form.text
    assert leaks(form.text, fields) == []
    assert "*******" + fields["phone"][-4:] in form.text and "留空则保持不变" in form.text
    assert await audit_log(ctx, city) == before


async def test_edit_keeps_the_masked_numbers_unless_reentered(ctx, city, web):
    member, fields = await member_in_a1(ctx, city)
    await web.login("sec_a1", ADMIN_PASSWORD)
    url = f"/admin/members/{member['_id']}/edit"
    # The birth date is not checked against the kept number: that check would answer guesses.
    kept = dict(fields, name="改名党员", id_card="", phone="", birth_date="1990-01-01", gender="女")
    assert (await web.post_form(url, kept)).status_code == 302
    stored = await ctx.db.members.find_one({"_id": member["_id"]})
    assert stored["name"] == "改名党员" and stored["birth_date"] == fields["birth_date"]
    assert stored["gender"] == fields["gender"]
    assert (stored["id_card_bidx"], stored["phone_bidx"]) == (member["id_card_bidx"], member["phone_bidx"])
    assert await members.unmask(ctx, SYSTEM, member["_id"]) == {"id_card": fields["id_card"],
                                                               "phone": fields["phone"]}
    assert (await web.post_form(url, dict(kept, clear_phone="1"))).status_code == 302
    assert (await ctx.db.members.find_one({"_id": member["_id"]}))["phone_bidx"] is None
    new_card = member_fields("x", birth=date(1990, 5, 6))["id_card"]
    assert (await web.post_form(url, dict(kept, id_card=new_card, phone="13700001111",
                                          birth_date="", gender=""))).status_code == 302
    clear = await members.unmask(ctx, SYSTEM, member["_id"])
    assert clear == {"id_card": new_card, "phone": "13700001111"}
    assert (await ctx.db.members.find_one({"_id": member["_id"]}))["birth_date"] == "1990-05-06"
