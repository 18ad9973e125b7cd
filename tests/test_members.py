"""Members: validation, encryption at rest, counters, lists, search."""

from datetime import date

import pytest

from models import orgs as orgs_model
from tests.conftest import actor_of
from tests.factories import member_fields
from wxbackend.errors import Conflict, DomainError, InvalidInput
from wxbackend.services.orgs import members


async def counts(ctx, org_id):
    org = await orgs_model.get(ctx.db, org_id)
    return org["member_count"], org["full_member_count"], org["subtree_member_count"]


async def test_personal_data_is_encrypted_at_rest(ctx, city):
    fields = member_fields("周八")
    created = await members.create(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), fields)
    raw = await ctx.db.members.find_one({"_id": created["_id"]})
    stored = repr(raw)
    assert fields["id_card"] not in stored and fields["phone"] not in stored
    assert "id_card" not in raw and "phone" not in raw
    shown = members.present(ctx, raw)
    assert shown["id_card_masked"] == fields["id_card"][:4] + "*" * 10 + fields["id_card"][-4:]
    assert shown["phone_masked"] == "*" * 7 + fields["phone"][-4:]
    # The birth date is digits 7-14 of the number: a page gets the year only.
    assert "birth_date" not in shown and shown["birth_year"] == fields["birth_date"][:4]
    assert not {"id_card_enc", "id_card_bidx", "phone_enc", "phone_bidx"} & set(shown)


@pytest.mark.parametrize("override, field", [
    ({"id_card": "350203198503140012"}, "id_card"),              # wrong check digit
    ({"birth_date": "1985-03-15"}, "birth_date"),                # disagrees with the ID card
    ({"gender": "女"}, "gender"),                                # disagrees with the ID card
    ({"phone": "1234"}, "phone"),
    ({"party_status": "群众"}, "party_status"),
    ({"joined_on": "2030-01-01"}, "joined_on"),
    ({"joined_on": "1995-01-01", "full_on": "1996-01-01"}, "joined_on"),   # aged 9
    ({"full_on": "2009-01-01"}, "full_on"),                      # before joining
    ({"full_on": ""}, "full_on"),                                # full member without a date
    ({"name": ""}, "name"),
    ({"category": "神仙"}, "category"),
])
async def test_invalid_fields_are_refused_and_nothing_is_written(ctx, city, override, field):
    fields = member_fields("吴九", birth=date(1985, 3, 14))
    fields.update(override)
    with pytest.raises(InvalidInput) as caught:
        await members.create(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), fields)
    assert field in [e["field"] for e in caught.value.details]
    assert await ctx.db.members.count_documents({"org_id": city.org("branch_a1")}) == 0
    assert await counts(ctx, city.org("branch_a1")) == (0, 0, 0)


async def test_duplicate_id_card_is_a_conflict(ctx, city):
    fields = member_fields("郑十")
    await members.create(ctx, actor_of(city, "city"), city.org("branch_a1"), fields)
    with pytest.raises(Conflict) as caught:
        await members.create(ctx, actor_of(city, "city"), city.org("branch_b1"), dict(fields, name="郑十一"))
    assert caught.value.code == "id_card_exists"
    assert await counts(ctx, city.org("branch_b1")) == (0, 0, 0)


async def test_members_only_join_active_branches(ctx, city):
    with pytest.raises(DomainError) as caught:
        await members.create(ctx, actor_of(city, "east"), city.org("district_a"), member_fields("孙"))
    assert caught.value.code == "member_org_type"


async def test_update_status_and_state_keep_counters(ctx, city):
    admin = actor_of(city, "sec_a1")
    probationary = member_fields("冯", party_status="预备党员", full_on="", joined_on="2026-01-05")
    member = await members.create(ctx, admin, city.org("branch_a1"), probationary)
    assert await counts(ctx, city.org("branch_a1")) == (1, 0, 1)
    await members.update(ctx, admin, member["_id"], dict(probationary, party_status="正式党员",
                                                         full_on="2026-11-01"))
    assert await counts(ctx, city.org("branch_a1")) == (1, 1, 1)
    await members.set_state(ctx, admin, member["_id"], "deceased")
    assert await counts(ctx, city.org("branch_a1")) == (0, 0, 0)
    assert (await orgs_model.get(ctx.db, city.org("root")))["subtree_member_count"] == 0
    await members.set_state(ctx, admin, member["_id"], "deceased")  # repeated: no second effect
    assert await counts(ctx, city.org("branch_a1")) == (0, 0, 0)
    await members.set_state(ctx, admin, member["_id"], "active")
    assert await counts(ctx, city.org("branch_a1")) == (1, 1, 1)


async def test_concurrent_state_changes_apply_once(ctx, city):
    import asyncio

    admin = actor_of(city, "sec_a1")
    member = await members.create(ctx, admin, city.org("branch_a1"), member_fields("褚"))
    results = await asyncio.gather(*[members.set_state(ctx, admin, member["_id"], "stopped")
                                     for _ in range(10)], return_exceptions=True)
    assert all(not isinstance(r, Exception) or isinstance(r, Conflict) for r in results)
    assert await counts(ctx, city.org("branch_a1")) == (0, 0, 0)
    assert (await orgs_model.get(ctx.db, city.org("district_a")))["subtree_member_count"] == 0


async def test_unmask_is_audited(ctx, city):
    admin = actor_of(city, "sec_a1")
    fields = member_fields("卫")
    member = await members.create(ctx, admin, city.org("branch_a1"), fields)
    clear = await members.unmask(ctx, admin, member["_id"])
    assert clear == {"id_card": fields["id_card"], "phone": fields["phone"]}
    from models import audit as audit_model

    entries = await audit_model.for_target(ctx.db, member["_id"])
    entry = next(e for e in entries if e["action"] == "member.unmask")
    assert entry["actor"]["name"] == "sec_a1" and entry["ip"] == "127.0.0.1"
    assert fields["id_card"] not in repr(entry)


async def test_subtree_pages_walk_branches_in_order_without_gaps(ctx, city):
    admin = actor_of(city, "city")
    names = {}
    for branch, count in (("branch_a1", 30), ("branch_a2", 45), ("branch_b1", 7)):
        for i in range(count):
            m = await members.create(ctx, admin, city.org(branch),
                                     member_fields(f"党员{branch[-2:]}{i:03d}", birth=date(1980, 1, 1 + i % 28)))
            names[m["_id"]] = branch
    seen, cursor = [], None
    while True:
        rows, cursor = await members.page(ctx, admin, city.org("root"), cursor, limit=20)
        seen.extend(rows)
        assert len(rows) <= 20
        if cursor is None:
            break
    assert len(seen) == 82 and len({r["_id"] for r in seen}) == 82
    order = [names[r["_id"]] for r in seen]
    assert order == sorted(order, key=["branch_a1", "branch_a2", "branch_b1"].index)
    in_a2 = [r["name"] for r in seen if names[r["_id"]] == "branch_a2"]
    assert in_a2 == sorted(in_a2)


async def test_page_sees_members_added_after_the_tree_snapshot(ctx, city):
    admin = actor_of(city, "city")
    await members.page(ctx, admin, city.org("root"))   # snapshot taken with empty branches
    await members.create(ctx, admin, city.org("branch_b1"), member_fields("新来的"))
    rows, _ = await members.page(ctx, admin, city.org("root"))
    assert [r["name"] for r in rows] == ["新来的"]


async def test_search_by_name_id_card_and_phone_stays_in_scope(ctx, city):
    east, west = actor_of(city, "east"), actor_of(city, "west")
    mine = member_fields("陈东")
    theirs = member_fields("陈西")
    await members.create(ctx, east, city.org("branch_a1"), mine)
    await members.create(ctx, west, city.org("branch_b1"), theirs)
    assert [m["name"] for m in await members.search(ctx, east, city.org("district_a"), "陈")] == ["陈东"]
    assert [m["name"] for m in await members.search(ctx, east, city.org("district_a"), mine["id_card"])] == ["陈东"]
    assert [m["name"] for m in await members.search(ctx, east, city.org("district_a"), mine["phone"])] == ["陈东"]
    # The other district's member exists but is invisible from here.
    assert await members.search(ctx, east, city.org("district_a"), theirs["id_card"]) == []
    assert await members.search(ctx, east, city.org("district_a"), theirs["phone"]) == []
    assert await members.search(ctx, east, city.org("district_a"), "陈西") == []


async def test_bad_cursor_is_a_clear_error(ctx, city):
    with pytest.raises(InvalidInput) as caught:
        await members.page(ctx, actor_of(city, "east"), city.org("district_a"), "garbage!!")
    assert caught.value.code == "bad_cursor"
