"""Organisation tree: structure rules, moves, counters, dissolution, upgrade."""

from datetime import date

import pytest

from models import orgs as orgs_model
from tests.conftest import SYSTEM, actor_of
from tests.factories import member_fields
from wxbackend.errors import DomainError, Forbidden
from wxbackend.services import orgs
from wxbackend.services.orgs import members


async def fetch(ctx, org_id):
    return await orgs_model.get(ctx.db, org_id)


async def test_tree_paths_and_child_counts(ctx, city):
    branch = await fetch(ctx, city.org("branch_a1"))
    assert branch["ancestors"] == [city.org("root"), city.org("district_a")]
    assert branch["org_ancestors"] == [*branch["ancestors"], branch["_id"]]
    assert (await fetch(ctx, city.org("district_a")))["child_count"] == 2
    assert (await fetch(ctx, city.org("root")))["child_count"] == 2


@pytest.mark.parametrize("child, parent, code", [
    ("group", "district_a", "org_parent_type"),
    ("branch", "branch_a1", "org_parent_type"),
    ("general_branch", "branch_a1", "org_parent_type"),
])
async def test_type_rules_refuse_impossible_parents(ctx, city, child, parent, code):
    with pytest.raises(DomainError) as caught:
        await orgs.create(ctx, SYSTEM, city.org(parent), name="新组织", org_type=child, category="organ")
    assert caught.value.code == code


async def test_counts_follow_members(ctx, city):
    secretary = actor_of(city, "sec_a1")
    for name in ("甲", "乙"):
        await members.create(ctx, secretary, city.org("branch_a1"), member_fields(name))
    await members.create(ctx, secretary, city.org("branch_a1"),
                         member_fields("丙", party_status="预备党员", full_on="", joined_on="2026-01-05"))
    branch, district, root = [await fetch(ctx, city.org(n)) for n in ("branch_a1", "district_a", "root")]
    assert (branch["member_count"], branch["full_member_count"], branch["subtree_member_count"]) == (3, 2, 3)
    assert district["subtree_member_count"] == 3 and district["member_count"] == 0
    assert root["subtree_member_count"] == 3


async def test_move_subtree_rewrites_paths_and_counters(ctx, city):
    east = actor_of(city, "city")
    member = await members.create(ctx, east, city.org("branch_a1"), member_fields("王五"))
    group = await orgs.create(ctx, SYSTEM, city.org("branch_a1"), name="第一党小组", org_type="group",
                              category="community")
    await orgs.move(ctx, east, city.org("branch_a1"), city.org("district_b"))
    moved = await fetch(ctx, city.org("branch_a1"))
    assert moved["parent_id"] == city.org("district_b")
    assert moved["org_ancestors"] == [city.org("root"), city.org("district_b"), moved["_id"]]
    assert (await fetch(ctx, group["_id"]))["ancestors"] == moved["org_ancestors"]
    stored = await ctx.db.members.find_one({"_id": member["_id"]})
    assert stored["org_ancestors"] == moved["org_ancestors"]
    assert (await fetch(ctx, city.org("district_a")))["subtree_member_count"] == 0
    assert (await fetch(ctx, city.org("district_b")))["subtree_member_count"] == 1
    assert (await fetch(ctx, city.org("root")))["subtree_member_count"] == 1
    assert (await fetch(ctx, city.org("district_a")))["child_count"] == 1
    assert (await fetch(ctx, city.org("district_b")))["child_count"] == 2
    # The west committee now sees the moved member; the east committee no longer does.
    assert await members.get_visible(ctx, actor_of(city, "west"), member["_id"])
    with pytest.raises(Forbidden):
        await members.get_visible(ctx, actor_of(city, "east"), member["_id"])


async def test_move_under_own_descendant_is_refused(ctx, city):
    general = await orgs.create(ctx, SYSTEM, city.org("district_a"), name="总支", org_type="general_branch",
                                category="organ")
    before = await fetch(ctx, city.org("district_a"))
    for target in (city.org("district_a"), general["_id"]):
        with pytest.raises(DomainError) as caught:
            await orgs.move(ctx, actor_of(city, "city"), city.org("district_a"), target)
        assert caught.value.code == "org_move_into_descendant"
    assert await fetch(ctx, city.org("district_a")) == before


async def test_move_needs_scope_over_both_ends(ctx, city):
    with pytest.raises(Forbidden):
        await orgs.move(ctx, actor_of(city, "east"), city.org("branch_a1"), city.org("district_b"))
    assert (await fetch(ctx, city.org("branch_a1")))["parent_id"] == city.org("district_a")


async def test_dissolve_only_when_empty_and_then_no_members(ctx, city):
    admin = actor_of(city, "east")
    await members.create(ctx, admin, city.org("branch_a1"), member_fields("赵六"))
    with pytest.raises(DomainError) as caught:
        await orgs.dissolve(ctx, admin, city.org("branch_a1"))
    assert caught.value.code == "org_not_empty"
    with pytest.raises(DomainError) as caught:
        await orgs.dissolve(ctx, admin, city.org("district_a"))
    assert caught.value.code == "org_not_empty"
    dissolved = await orgs.dissolve(ctx, admin, city.org("branch_a2"))
    assert dissolved["status"] == "dissolved"
    assert (await fetch(ctx, city.org("district_a")))["child_count"] == 1
    with pytest.raises(DomainError) as caught:
        await members.create(ctx, admin, city.org("branch_a2"), member_fields("钱七"))
    assert caught.value.code == "org_dissolved"
    with pytest.raises(DomainError) as caught:
        await orgs.dissolve(ctx, admin, city.org("branch_a2"))
    assert caught.value.code == "org_dissolved"
    assert (await fetch(ctx, city.org("branch_a2")))["member_count"] == 0


async def test_upgrade_branch_to_general_branch(ctx, city):
    admin = actor_of(city, "east")
    upgraded = await orgs.upgrade(ctx, admin, city.org("branch_a2"), "general_branch")
    assert upgraded["type"] == "general_branch" and upgraded["term_years"] == 3
    child = await orgs.create(ctx, admin, city.org("branch_a2"), name="新支部", org_type="branch",
                              category="organ")
    assert child["parent_id"] == city.org("branch_a2")
    with pytest.raises(DomainError) as caught:
        await orgs.upgrade(ctx, admin, city.org("district_a"), "committee")
    assert caught.value.code == "org_upgrade_type"
    upgraded = await orgs.upgrade(ctx, admin, city.org("branch_a2"), "committee")
    assert upgraded["term_years"] == 5
    # A community branch keeps 5-year terms (村/社区) even as a 党总支.
    community = await orgs.upgrade(ctx, admin, city.org("branch_a1"), "general_branch")
    assert community["term_years"] == 5


async def test_secretary_cannot_restructure(ctx, city):
    with pytest.raises(Forbidden):
        await orgs.create(ctx, actor_of(city, "sec_a1"), city.org("district_a"), name="x",
                          org_type="branch", category="organ")
    with pytest.raises(Forbidden):
        await orgs.dissolve(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"))


def test_a_term_is_overdue_from_the_day_after_it_ends():
    branch = {"term_start": "2024-02-29", "term_years": 3}  # ends 2027-02-28 (no 29th)
    assert orgs.term_end(branch) == date(2027, 2, 28)
    assert not orgs.term_overdue(branch, date(2027, 2, 28))
    assert orgs.term_overdue(branch, date(2027, 3, 1))
    assert not orgs.term_overdue({"term_start": None, "term_years": 3}, date(2099, 1, 1))


async def test_term_overdue_and_leadership(ctx, city):
    today = ctx.clock.today()
    assert orgs.term_overdue(await fetch(ctx, city.org("branch_a1")), today)  # began 6 years ago
    assert not orgs.term_overdue(await fetch(ctx, city.org("branch_a2")), today)  # 1 year ago
    admin = actor_of(city, "sec_a1")
    people = [await members.create(ctx, admin, city.org("branch_a1"), member_fields(n)) for n in "甲乙丙"]
    updated = await orgs.set_leadership(ctx, admin, city.org("branch_a1"), secretary_id=people[0]["_id"],
                                        committee=[(p["_id"], "委员") for p in people])
    assert updated["secretary"]["name"] == "甲"
    assert [c["name"] for c in updated["committee"]] == ["甲", "乙", "丙"]
    outsider = await members.create(ctx, actor_of(city, "west"), city.org("branch_b1"), member_fields("丁"))
    with pytest.raises(DomainError) as caught:
        await orgs.set_leadership(ctx, admin, city.org("branch_a1"), secretary_id=outsider["_id"], committee=[])
    assert caught.value.code == "leader_not_in_org"


async def test_rename_and_bad_names(ctx, city):
    renamed = await orgs.rename(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), "  东区社区党支部 ")
    assert renamed["name"] == "东区社区党支部"
    with pytest.raises(DomainError) as caught:
        await orgs.rename(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), "x" * 61)
    assert caught.value.code == "org_name"
    with pytest.raises(Forbidden):
        await orgs.rename(ctx, actor_of(city, "sec_a1"), city.org("branch_a2"), "越权")
