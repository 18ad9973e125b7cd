"""Members: validation, encryption at rest, counters, lists, search."""

from datetime import date

import pytest

from models import orgs as orgs_model
from tests.conftest import actor_of
from tests.factories import member_fields
from tests.memberkit import counting_reads, fill_branch
from wxbackend.errors import Conflict, DomainError, InvalidInput
from wxbackend.services.orgs import member_fences, members


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


# -- large branches: name fences ---------------------------------------------------

async def walk(ctx, actor, org, limit=members.PAGE_SIZE) -> list[members.MemberPage]:
    pages = [await members.browse(ctx, actor, org, limit=limit)]
    while pages[-1].next_cursor:
        pages.append(await members.browse(ctx, actor, org, after=pages[-1].next_cursor, limit=limit))
    return pages


def ids(page) -> list:
    return [r["_id"] for r in page.rows]


# Namesakes across page and fence boundaries: 60 王芳 in a row, and pairs elsewhere.
BIG_NAMES = ([f"陈{i:03d}" for i in range(90)] + ["王芳"] * 60 + [f"林{i % 40:03d}" for i in range(80)]
             + [f"张{i:03d}" for i in range(50)])


async def test_a_large_branch_pages_both_ways_in_name_order_with_namesakes(ctx, city):
    docs = await fill_branch(ctx, city, BIG_NAMES)
    admin, org = actor_of(city, "sec_a1"), await orgs_model.get(ctx.db, city.org("branch_a1"))
    expected = [d["_id"] for d in sorted(docs, key=lambda d: (d["name"], d["_id"]))]
    for attempt in ("fences cut on the first page", "fences read back from Redis"):
        pages = await walk(ctx, admin, org)
        assert [i for p in pages for i in ids(p)] == expected, attempt
        assert all(len(p.rows) == members.PAGE_SIZE for p in pages[:-1]) and len(pages) == 6
        assert pages[0].prev_cursor is None and pages[-1].next_cursor is None
        # Back from the last page, through 上一页: the same pages, the same rows.
        back, page = [pages[-1]], pages[-1]
        while page.prev_cursor:
            page = await members.browse(ctx, admin, org, before=page.prev_cursor)
            back.append(page)
        assert [ids(p) for p in reversed(back)] == [ids(p) for p in pages]
        assert back[-1].prev_cursor is None


async def test_each_page_of_a_large_branch_reads_about_what_it_shows(ctx, city, servers):
    await fill_branch(ctx, city, [f"{s}{i:03d}" for s in "陈林黄张李王吴刘" for i in range(150)])  # 1,200
    org = await orgs_model.get(ctx.db, city.org("branch_a1"))
    admin = actor_of(city, "sec_a1")
    await members.browse(ctx, admin, org)  # the first list of the branch cuts its fences
    async with counting_reads(ctx, servers) as (spied, reads):
        pages = [await members.browse(spied, admin, org)]
        per_page = [reads.count]
        for _ in range(5):
            pages.append(await members.browse(spied, admin, org, after=pages[-1].next_cursor))
            per_page.append(reads.count - sum(per_page))
        await members.browse(spied, admin, org, before=pages[-1].prev_cursor)
        per_page.append(reads.count - sum(per_page))
    assert [len(p.rows) for p in pages] == [members.PAGE_SIZE] * 6
    # A page of 50 (plus one, to know more follow) reads a few intervals more, not 1,200.
    assert max(per_page) <= members.PAGE_SIZE + 3 * member_fences.FENCE_SIZE, per_page


async def test_stale_or_wrong_fences_cost_reads_never_rows(ctx, city, servers):
    docs = await fill_branch(ctx, city, BIG_NAMES)
    org = await orgs_model.get(ctx.db, city.org("branch_a1"))
    admin = actor_of(city, "sec_a1")
    expected = [d["_id"] for d in sorted(docs, key=lambda d: (d["name"], d["_id"]))]
    # Bounds anywhere (one inside the run of 王芳), counts all wrong: a partition all the same.
    await member_fences.save(ctx, org["_id"], member_fences.Fences(
        ["D", "林010", "王芳", "王芳z"], [0, 500, 1, 0, 3], changed=True))
    assert [i for p in await walk(ctx, admin, org) for i in ids(p)] == expected
    # Members added since the fences were cut: 200 more in one interval, which grows.
    docs += await fill_branch(ctx, city, [f"陈{i:03d}乙" for i in range(200)])
    expected = [d["_id"] for d in sorted(docs, key=lambda d: (d["name"], d["_id"]))]
    assert [i for p in await walk(ctx, admin, org) for i in ids(p)] == expected
    # Listing recounted and cut what it read whole: the next pages read little again.
    org = await orgs_model.get(ctx.db, org["_id"])
    async with counting_reads(ctx, servers) as (spied, reads):
        await walk(spied, admin, org)
    assert reads.count <= 1.5 * len(docs), reads.count
    fences = await member_fences.load(ctx, org["_id"], org["member_count"])
    oversized = [t for t, size in enumerate(fences.sizes) if size > 2 * member_fences.FENCE_SIZE]
    assert [fences.low(t) for t in oversized] == ["王芳"]  # 60 namesakes: one name is never cut


async def test_a_district_page_reads_a_large_branch_through_its_fences(ctx, city, servers):
    """Tree order across organisations: a large branch read through its fences, then a small one."""
    small = await fill_branch(ctx, city, [f"甲{i:02d}" for i in range(30)], branch="branch_a2")
    large = await fill_branch(ctx, city, [f"乙{i:03d}" for i in range(300)])
    district = await orgs_model.get(ctx.db, city.org("district_a"))
    tree_order = {city.org("branch_a1"): 0, city.org("branch_a2"): 1}
    expected = [d["_id"] for d in sorted(small + large, key=lambda d: (tree_order[d["org_id"]], d["name"], d["_id"]))]
    admin = actor_of(city, "east")
    pages = await walk(ctx, admin, district)
    assert [i for p in pages for i in ids(p)] == expected
    # Back from the small branch into the large one's last names, and on to the start.
    back, page = [pages[-1]], pages[-1]
    while page.prev_cursor:
        page = await members.browse(ctx, admin, district, before=page.prev_cursor)
        back.append(page)
    assert [ids(p) for p in reversed(back)] == [ids(p) for p in pages]
    async with counting_reads(ctx, servers) as (spied, reads):
        await members.browse(spied, admin, district, after=pages[2].next_cursor)
    assert reads.count <= 2 * members.PAGE_SIZE


async def test_name_search_pages_both_ways_and_keeps_to_the_prefix(ctx, city):
    docs = await fill_branch(ctx, city, [f"陈{i % 70:03d}" for i in range(140)] + ["陈"] * 3 + ["林一", "陆二"])
    await fill_branch(ctx, city, ["陈在西区"], branch="branch_b1")
    district = await orgs_model.get(ctx.db, city.org("district_a"))
    admin = actor_of(city, "east")
    found = [await members.search_names(ctx, admin, district, " 陈 ")]
    while found[-1].next_cursor:
        found.append(await members.search_names(ctx, admin, district, "陈", after=found[-1].next_cursor))
    expected = [d["_id"] for d in sorted(docs, key=lambda d: (d["name"], d["_id"])) if d["name"][0] == "陈"]
    assert [i for p in found for i in ids(p)] == expected and len(found) == 3
    back = await members.search_names(ctx, admin, district, "陈", before=found[2].prev_cursor)
    assert ids(back) == ids(found[1]) and back.prev_cursor and back.next_cursor
    first = await members.search_names(ctx, admin, district, "陈", before=found[1].prev_cursor)
    assert ids(first) == ids(found[0]) and first.prev_cursor is None
