"""The demo city: tree shape, counters, member data, determinism, demo logins."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from datetime import date
from typing import Any

import pytest
from bson import ObjectId

from models import ensure_indexes
from models import members as members_model
from models import orgs as orgs_model
from models.enums import ORG_PARENT_TYPES, term_years_for
from tests.conftest import City, actor_of
from tests.factories import member_fields
from tests.webclient import WebClient
from wxbackend.context import AppContext
from wxbackend.demo import city as demo_city
from wxbackend.demo import seed
from wxbackend.errors import DomainError
from wxbackend.idcard import parse_id_card
from wxbackend.services import installed, orgs
from wxbackend.services.orgs import members

SCALE = 0.003
TODAY = date(2026, 3, 1)
MEMBER_FIELDS = ("name", "gender", "ethnicity", "birth_date", "education", "party_status",
                 "joined_on", "full_on", "category")


def quiet(message: str) -> None:
    pass


async def seed_small(ctx: AppContext) -> seed.SeedReport:
    return await seed.seed_city(ctx, SCALE, today=TODAY, progress=quiet)


async def all_orgs(ctx: AppContext) -> list[dict[str, Any]]:
    found = []
    for root in await orgs_model.roots(ctx.db):
        found.extend(await orgs_model.collection(ctx.db).find({"org_ancestors": root["_id"]}).to_list())
    return found


async def all_members(ctx: AppContext) -> list[dict[str, Any]]:
    found = []
    for root in await orgs_model.roots(ctx.db):
        found.extend(await ctx.db[members_model.COLLECTION].find({"org_ancestors": root["_id"]}).to_list())
    return found


def clear_fields(ctx: AppContext, member: dict[str, Any]) -> dict[str, Any]:
    """A stored member back as the form fields validate_fields takes."""
    raw = {f: member.get(f) for f in MEMBER_FIELDS}
    raw["id_card"] = ctx.cipher.decrypt(member["id_card_enc"], purpose="id_card")
    raw["phone"] = ctx.cipher.decrypt(member["phone_enc"], purpose="phone") if member["phone_enc"] else None
    return raw


# -- the plan alone (no database): the full-scale shape ---------------------------------

@pytest.fixture(scope="module")
def full_plan() -> list[demo_city.Spec]:
    return demo_city.plan_city(1.0, TODAY)


def test_full_scale_city_has_the_real_shape(full_plan):
    kinds = Counter(s.org_type for s in full_plan)
    assert sum(kinds.values()) == 14_000
    assert kinds["group"] == 450 and 12_000 < kinds["branch"] < 12_600
    assert 340 < kinds["committee"] - 15 < 360 and 850 < kinds["general_branch"] < 950
    sizes = [s.size for s in full_plan if s.kind == "branch"]
    assert sum(sizes) == demo_city.FULL_MEMBERS
    assert sizes.count(demo_city.BIG_BRANCH) == 1 and max(sizes) == demo_city.BIG_BRANCH
    assert 0.02 < sum(1 for n in sizes if n < 3) / len(sizes) < 0.04
    assert 0.015 < sum(1 for n in sizes if 60 <= n <= 300) / len(sizes) < 0.025
    assert sum(1 for n in sizes if 5 <= n <= 40) / len(sizes) > 0.9
    tops = full_plan[0].children
    assert len(tops) == 14
    for top in (t for t in tops if t.code.startswith("D")):
        assert 20_000 <= sum(s.size for s in demo_city.walk(top)) <= 30_000, top.name
    expired = sum(1 for s in full_plan if orgs.term_overdue(s.doc, TODAY))
    assert 0.06 < expired / len(full_plan) < 0.10


def test_categories_match_the_committee_above(full_plan):
    expected = {"S02": {"soe"}, "S03": {"school"}, "S04": {"institution"},
                "S05": {"private", "social"}, "S01": {"organ"}, "S06": {"organ"}}
    for top in full_plan[0].children:
        found = {s.category for s in demo_city.walk(top) if s is not top}
        if top.code.startswith("D"):
            assert {"rural", "community"} <= found
        else:
            assert not found & {"rural", "community"}, top.name
        if top.code in expected:
            assert found == expected[top.code], top.name


@pytest.mark.parametrize("scale", [0.002, 0.003, 0.05])
def test_tiny_cities_are_still_trees(scale):
    plan = demo_city.plan_city(scale, TODAY)
    kinds = Counter(s.kind for s in plan)
    assert kinds["root"] == 1 and kinds["top"] >= 2 and kinds["base"] >= 1
    assert kinds["general"] >= 1 and kinds["branch"] >= 4 and kinds["group"] >= 1
    assert sum(s.size for s in plan) == round(demo_city.FULL_MEMBERS * scale)


def test_same_scale_gives_the_same_plan():
    first, second = demo_city.plan_city(0.05, TODAY), demo_city.plan_city(0.05, TODAY)
    shape = lambda plan: [(s.code, s.name, s.category, s.size, s.doc["term_start"]) for s in plan]  # noqa: E731
    assert shape(first) == shape(second)
    assert shape(first) != shape(demo_city.plan_city(0.06, TODAY))


def test_scale_out_of_range_is_refused():
    with pytest.raises(DomainError) as err:
        demo_city.scaled_counts(0)
    assert err.value.code == "bad_scale"


# -- seeded into the real database ---------------------------------------------------------

async def test_seeded_city_is_consistent(ctx):
    report = await seed_small(ctx)
    found = await all_orgs(ctx)
    check_tree(found, report)
    await check_counters(ctx, found)
    await check_members(ctx, found)


def check_tree(found: list[dict[str, Any]], report: seed.SeedReport) -> None:
    by_id = {o["_id"]: o for o in found}
    assert len(found) == sum(report.orgs.values()) == len(demo_city.plan_city(SCALE, TODAY))
    assert len({o["code"] for o in found}) == len(found)
    roots = [o for o in found if o["parent_id"] is None]
    assert [r["name"] for r in roots] == [demo_city.ROOT_NAME]
    for org in found:
        assert org["org_ancestors"] == [*org["ancestors"], org["_id"]]
        assert org["depth"] == len(org["ancestors"])
        assert org["term_years"] == term_years_for(org["type"], org["category"])
        if org["parent_id"] is not None:
            parent = by_id[org["parent_id"]]
            assert parent["type"] in ORG_PARENT_TYPES[org["type"]], org["name"]
            assert org["ancestors"] == parent["org_ancestors"]
            assert org["code"].startswith(parent["code"] + "-") or parent is roots[0]
    assert any(orgs.term_overdue(o, TODAY) for o in found)
    assert "organisations" in report.summary() and f"{report.seconds:.1f}s" in report.summary()


async def check_counters(ctx: AppContext, found_orgs: list[dict[str, Any]]) -> None:
    """Counters against counts from index-served reads: SecantusDB serves a filter from
    an index only when its fields are a leading prefix of one ({org_id, state} scans)."""
    people, found = ctx.db[members_model.COLLECTION], orgs_model.collection(ctx.db)
    fields = {"state": 1, "party_status": 1, "status": 1}
    for org in found_orgs:
        oid = org["_id"]
        own = await people.find({"org_id": oid}, fields).to_list()
        active = [m for m in own if m["state"] == "active"]
        assert org["member_count"] == len(active)
        assert org["full_member_count"] == sum(1 for m in active if m["party_status"] == "full")
        subtree = await people.find({"org_ancestors": oid}, fields).to_list()
        assert org["subtree_member_count"] == sum(1 for m in subtree if m["state"] == "active")
        children = await found.find({"parent_id": oid}, fields).to_list()
        assert org["child_count"] == sum(1 for c in children if c["status"] == "active")
    assert sum(o["member_count"] for o in found_orgs) == \
        sum(1 for m in await all_members(ctx) if m["state"] == "active")


async def check_members(ctx: AppContext, found_orgs: list[dict[str, Any]]) -> None:
    """Valid, unique ID cards; fields validate_fields accepts unchanged; real leaders."""
    orgs_by_id = {o["_id"]: o for o in found_orgs}
    people = await all_members(ctx)
    assert len(people) == round(demo_city.FULL_MEMBERS * SCALE)
    cards = [ctx.cipher.decrypt(m["id_card_enc"], purpose="id_card") for m in people]
    assert len(set(cards)) == len(cards)
    for card, member in zip(cards, people, strict=True):
        parsed = parse_id_card(card, today=TODAY)
        assert card.startswith("3599") and parsed.gender == member["gender"]
        assert member["id_card_bidx"] == ctx.cipher.blind_index(card, "id_card")
        org = orgs_by_id[member["org_id"]]
        assert org["type"] == "branch" and member["org_ancestors"] == org["org_ancestors"]
        if member["group_id"] is not None:
            assert orgs_by_id[member["group_id"]]["parent_id"] == org["_id"]
    for member in random.Random(1).sample(people, 150):
        clean, errors = members.validate_fields(clear_fields(ctx, member), today=TODAY)
        assert errors == [], (member["name"], errors)
        assert {k: clean[k] for k in MEMBER_FIELDS} == {k: member[k] for k in MEMBER_FIELDS}
    statuses = Counter(m["party_status"] for m in people)
    assert 0 < statuses["probationary"] < 0.08 * len(people)
    check_leaders(orgs_by_id, {m["_id"]: m for m in people})


def check_leaders(orgs_by_id: dict[ObjectId, dict], people: dict[ObjectId, dict]) -> None:
    branches = [o for o in orgs_by_id.values() if o["type"] == "branch"]
    led = [b for b in branches if b["secretary"]]
    assert len(led) > 0.8 * sum(1 for b in branches if b["full_member_count"])
    for branch in led:
        secretary = people[branch["secretary"]["member_id"]]
        assert secretary["org_id"] == branch["_id"] and secretary["party_status"] == "full"
        assert secretary["state"] == "active" and secretary["name"] == branch["secretary"]["name"]
        if branch["full_member_count"] >= 7:
            assert 3 <= len(branch["committee"]) <= 5
            assert all(people[c["member_id"]]["org_id"] == branch["_id"] for c in branch["committee"])
    assert any(b["committee"] for b in led)


async def test_same_scale_seeds_the_same_city(ctx, servers, settings):
    other = await AppContext.connect(settings, servers.mongodb_uri, servers.redis_url,
                                     database=f"t_{uuid.uuid4().hex[:12]}", registry=installed.registry(settings))
    try:
        await ensure_indexes(other.db, other.registry.models)
        await seed_small(ctx)
        await seed_small(other)
        assert await city_fingerprint(ctx) == await city_fingerprint(other)
        first = min(await all_members(ctx), key=lambda m: m["id_card_bidx"])
        second = min(await all_members(other), key=lambda m: m["id_card_bidx"])
        # Same numbers, different ciphertexts: encryption uses random nonces.
        assert first["name"] == second["name"] and first["id_card_enc"] != second["id_card_enc"]
    finally:
        await other.mongo.drop_database(other.db.name)
        await other.close()


async def city_fingerprint(ctx: AppContext) -> tuple[list, list]:
    found = await all_orgs(ctx)
    codes = {o["_id"]: o["code"] for o in found}
    tree = sorted((o["code"], o["name"], o["type"], o["category"], o["term_start"], o["member_count"],
                   o["full_member_count"], o["subtree_member_count"],
                   (o["secretary"] or {}).get("name")) for o in found)
    people = sorted((codes[m["org_id"]], m["name"], m["birth_date"], m["id_card_bidx"],
                     m["phone_bidx"], m["party_status"], m["joined_on"], m["category"], m["state"])
                    for m in await all_members(ctx))
    return tree, people


async def test_seed_refuses_a_database_that_has_organisations(ctx, city: City):
    before = await index_names(ctx), len(await all_orgs(ctx))
    with pytest.raises(DomainError) as err:
        await seed_small(ctx)
    assert err.value.code == "database_not_empty"
    assert (await index_names(ctx), len(await all_orgs(ctx))) == before
    assert await ctx.redis.get(seed.LOCK_KEY) is None


async def index_names(ctx: AppContext) -> list[list[str]]:
    return [sorted(await ctx.db[name].index_information()) for name in ("members", "organisations")]


async def test_seed_refuses_while_another_seed_runs(ctx):
    await ctx.redis.set(seed.LOCK_KEY, b"1")
    with pytest.raises(DomainError) as err:
        await seed_small(ctx)
    assert err.value.code == "seed_running"
    assert await orgs_model.roots(ctx.db) == []


async def test_ensure_demo_seeds_once_and_demo_admins_log_in(ctx, server_url):
    login = await seed.ensure_demo(ctx, SCALE)
    assert (login.username, login.password) == ("city", seed.DEMO_PASSWORD) and "演示" in login.note
    counted = len(await all_orgs(ctx)), len(await all_members(ctx))
    assert await seed.ensure_demo(ctx, SCALE) == login
    assert (len(await all_orgs(ctx)), len(await all_members(ctx))) == counted
    example = await members_model.by_id_card(
        ctx.db, ctx.cipher.blind_index(seed.API_EXAMPLE_MEMBER["id_card"], "id_card"))
    secretary = await ctx.db.users.find_one({"username": "sec-d01-b0001"})
    assert example["name"] == "演示党员" and example["org_id"] == secretary["roles"][0]["org_id"]
    found = {o["_id"]: o for o in await all_orgs(ctx)}
    users = await ctx.db.users.find({"username": {"$gte": "a"}}).to_list()
    assert {"city", "auditor", "d01", "s01"} <= {u["username"] for u in users}
    assert any(u["username"].startswith("sec-d01-b") for u in users)
    for user in users:
        home = found[user["roles"][0]["org_id"]]
        web = WebClient(server_url)
        try:
            await web.login(user["username"], seed.DEMO_PASSWORD)
            assert home["name"] in await open_home(web)
            if user["username"] == "city":
                await city_admin_lists_a_district(web, found)
        finally:
            await web.close()


async def open_home(web: WebClient) -> str:
    home = await web.get("/admin/")
    page = await web.get(home.headers["location"])
    assert page.status_code == 200, page.text
    return page.text


async def city_admin_lists_a_district(web: WebClient, found: dict[ObjectId, dict]) -> None:
    district = next(o for o in found.values() if o["code"] == "D01")
    page = await web.get(f"/admin/orgs/{district['_id']}/members")
    assert page.status_code == 200, page.text
    assert page.text.count('href="/admin/members/') == members.PAGE_SIZE
    assert "下一页" in page.text


async def test_member_pages_list_everyone_when_a_page_ends_among_namesakes(ctx, city: City):
    """A page boundary on the third of five namesakes must not end the organisation's
    list early (the next page's ``name >= cursor name`` also matches the first two)."""
    branch = city.branch_a1
    names = [f"A{i:02d}" for i in range(47)] + ["M"] * 5 + [f"Z{i:02d}" for i in range(60)]
    docs = [members.new_document(ctx, members.validate_fields(member_fields(n), today=TODAY)[0], branch)
            for n in names]
    await members_model.insert_many(ctx.db, docs)
    listed, cursor = [], None
    while True:
        rows, cursor = await members.page(ctx, actor_of(city, "city"), branch["_id"], cursor)
        listed.extend(r["_id"] for r in rows)
        if not cursor:
            break
    assert sorted(listed) == sorted(d["_id"] for d in docs)
