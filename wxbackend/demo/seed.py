"""The deterministic demo city: a synthetic 鹭城 shaped like the real one.

At scale 1.0 the city has 14,000 organisations (one city committee, 6 district
and 8 industry committees, ~350 基层党委, ~900 党总支, ~12,300 党支部 and ~450
党小组) and 219,000 members; every count scales linearly with ``scale``. A fixed
random seed makes the same scale (and the same ``today``) give the same city::

    report = await seed_city(ctx, 0.02)      # into an empty database
    print(report.summary())
    login = await ensure_demo(ctx, 0.02)     # `serve --demo`: seed once, then reuse

The bulk load goes into collections whose indexes exist before the first document
(:class:`~wxbackend.demo.loader.IndexesFirst`): building one afterwards holds
SecantusDB's one storage lock for up to a minute at scale 1.0, every other request
waiting, while each batch inserted holds it for that batch only (issue 19; figures
in bench/seed.py). Every maintained counter is computed here, in Python, and written
with the organisation documents, never by per-member ``$inc``.

The city, its districts and its ID-card region codes (3599xx) are fictional.
Demo accounts share one published password (:data:`DEMO_PASSWORD`): they exist
only in the demo city.

This module loads the city and its demo accounts; the plan is in
:mod:`wxbackend.demo.city`, the members are drawn by :mod:`wxbackend.demo.people`
from the lists in :mod:`wxbackend.demo.names`, the bulk loading is
:mod:`wxbackend.demo.loader`, and a year of meetings is :mod:`wxbackend.demo.seed_history`.
"""

from __future__ import annotations

import asyncio
import random
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from models import members as members_model
from models import orgs as orgs_model
from models import users as users_model
from wxbackend.context import AppContext
from wxbackend.demo import seed_history
from wxbackend.demo.city import SEED, CityPlanner, Spec, materialise, scaled_counts, walk
from wxbackend.demo.loader import BATCH, IndexesFirst, Loader
from wxbackend.demo.names import DUTIES
from wxbackend.demo.people import PeopleMaker
from wxbackend.errors import Conflict, DomainError
from wxbackend.services.accounts import admins
from wxbackend.services.accounts.access import Actor
from wxbackend.services.orgs import members, orgtree

DEMO_PASSWORD = "demo-city-2026"  # noqa: S105 - published, demo city only
LOCK_KEY = "seed:running"


@dataclass
class SeedReport:
    scale: float
    orgs: dict[str, int]
    members: int
    active_members: int
    users: list[str]
    seconds: float
    phases: dict[str, float]
    peak_rss_mb: float
    district_members: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {v:,}" for k, v in self.orgs.items())
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in self.phases.items())
        districts = ", ".join(f"{k} {v:,}" for k, v in self.district_members.items())
        return (f"demo city at scale {self.scale:g}: {sum(self.orgs.values()):,} organisations "
                f"({kinds}); {self.members:,} members ({self.active_members:,} active); "
                f"{len(self.users)} demo users\n"
                f"members per district: {districts}\n"
                f"took {self.seconds:.1f}s ({phases}); peak RSS of this process "
                f"{self.peak_rss_mb:.0f} MB")


@dataclass
class DemoLogin:
    username: str
    password: str
    note: str


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- loading -------------------------------------------------------------------------------

DEMO_NOTE = ("演示城市专用的公开固定密码，仅用于虚构的演示数据，切勿用于真实数据；"
             "其他演示账号 d01…（区委）、s01（行业党委）、sec-d01-b0001…（支部书记）、auditor（审计员）密码相同")


async def seed_city(ctx: AppContext, scale: float, *, today: date | None = None,
                    progress: Callable[[str], None] = _stderr) -> SeedReport:
    """Build the demo city into an empty database; ``today`` anchors ages and terms."""
    counts = scaled_counts(scale)
    if not await ctx.redis.set(LOCK_KEY, b"1", nx=True, ex=3600):
        raise Conflict("seed_running", "演示城市正在生成中，请稍后再试（如上次生成被强行中断，"
                       "请清空数据目录后重试，或一小时后锁自动解除）")
    try:
        await _require_empty(ctx)
        return await _build(ctx, scale, counts, today or ctx.clock.today(), progress)
    finally:
        await ctx.redis.delete(LOCK_KEY)


async def _require_empty(ctx: AppContext) -> None:
    # Index-served probes (a bare find_one({}) would be a collection scan).
    org = await orgs_model.collection(ctx.db).find_one({"parent_id": None}, {"_id": 1})
    member = await ctx.db[members_model.COLLECTION].find_one({"id_card_bidx": {"$gte": ""}}, {"_id": 1})
    if org is not None or member is not None:
        raise DomainError("database_not_empty",
                          "数据库中已有组织或党员数据，演示城市只能生成到空数据库中")


async def _build(ctx: AppContext, scale: float, counts: dict[str, int], today: date,
                 progress: Callable[[str], None]) -> SeedReport:
    started = time.perf_counter()
    phases: dict[str, float] = {}
    rng = random.Random(SEED)
    specs = materialise(CityPlanner(rng, counts).plan(), today)
    phases["plan"] = time.perf_counter() - started
    progress(f"seed: scale {scale:g}, {len(specs):,} organisations, {counts['members']:,} members")
    async with IndexesFirst(ctx, phases, progress):
        mark = time.perf_counter()
        totals = await _load_members(ctx, PeopleMaker(rng, today), rng, specs, progress)
        phases["members"] = time.perf_counter() - mark
        mark = time.perf_counter()
        _fill_counters(specs)
        await _insert_orgs(ctx, specs)
        phases["organisations"] = time.perf_counter() - mark
    mark = time.perf_counter()
    users = await _demo_users(ctx, specs)
    await orgtree.invalidate(ctx)
    phases["users"] = time.perf_counter() - mark
    mark = time.perf_counter()
    history = await seed_history.seed_history(ctx, specs, today, progress)
    progress(f"seed: {history.summary()}")
    phases["history"] = time.perf_counter() - mark
    return SeedReport(
        scale=scale, orgs=dict(Counter(s.org_type for s in specs)), members=totals["all"],
        active_members=totals["active"], users=users, seconds=time.perf_counter() - started,
        phases=phases, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        district_members={s.code: s.doc["subtree_member_count"] for s in specs[0].children})


async def _load_members(ctx: AppContext, maker: PeopleMaker, rng: random.Random,
                        specs: list[Spec], progress: Callable[[str], None]) -> Counter:
    loader = Loader(ctx, members_model.COLLECTION)
    totals: Counter = Counter()
    branches = [s for s in specs if s.kind == "branch"]
    wanted, step = sum(b.size for b in branches), max(20_000, BATCH)
    mark, next_report = time.perf_counter(), step
    try:
        for spec in branches:
            people = _people_of(ctx, maker, spec)
            _count(spec, people, totals)
            _lead(rng, spec.doc, people)
            await loader.add(people)
            if totals["all"] >= next_report:
                rate = totals["all"] / (time.perf_counter() - mark)
                progress(f"seed: members {totals['all']:,}/{wanted:,} ({rate:,.0f}/s)")
                next_report += step
        await loader.close()
    finally:
        loader.abort()
    return totals


def _people_of(ctx: AppContext, maker: PeopleMaker, spec: Spec) -> list[dict[str, Any]]:
    groups = [c.doc["_id"] for c in spec.children if c.kind == "group"]
    people = []
    for i in range(spec.size):
        clean, state = maker.person(spec.category, spec.region)
        doc = members.new_document(ctx, clean, spec.doc)
        doc["state"] = state
        if groups:  # members of a branch with 党小组 each belong to one
            doc["group_id"] = groups[i % len(groups)]
        people.append(doc)
    return people


def _count(spec: Spec, people: list[dict[str, Any]], totals: Counter) -> None:
    active = [p for p in people if p["state"] == "active"]
    spec.doc["member_count"] = len(active)
    spec.doc["full_member_count"] = sum(1 for p in active if p["party_status"] == "full")
    totals["all"] += len(people)
    totals["active"] += len(active)


def _lead(rng: random.Random, org: dict[str, Any], people: list[dict[str, Any]]) -> None:
    """A secretary for most branches; a 3-5 person 支委会 where 7+ full members."""
    full = [p for p in people if p["state"] == "active" and p["party_status"] == "full"]
    if not full or rng.random() >= 0.96:
        return
    chosen = rng.sample(full, rng.randint(3, 5) if len(full) >= 7 else 1)
    org["secretary"] = {"member_id": chosen[0]["_id"], "name": chosen[0]["name"]}
    if len(chosen) > 1:
        org["committee"] = [{"member_id": p["_id"], "name": p["name"], "duty": duty}
                            for p, duty in zip(chosen, DUTIES, strict=False)]


def _fill_counters(specs: list[Spec]) -> None:
    """subtree_member_count and child_count, from the branches' member counts."""
    by_id = {s.doc["_id"]: s.doc for s in specs}
    for spec in specs:
        spec.doc["child_count"] = len(spec.children)
        if spec.kind == "branch":
            for org_id in spec.doc["org_ancestors"]:
                by_id[org_id]["subtree_member_count"] += spec.doc["member_count"]


async def _insert_orgs(ctx: AppContext, specs: list[Spec]) -> None:
    loader = Loader(ctx, orgs_model.COLLECTION)
    try:
        for spec in specs:  # tree order: a root is never missing while its subtree exists
            await loader.add([spec.doc])
        await loader.close()
    finally:
        loader.abort()


# -- demo accounts -----------------------------------------------------------------------------

async def _demo_users(ctx: AppContext, specs: list[Spec]) -> list[str]:
    """Two at a time: argon2 hashing (~50 ms and 64 MB each) runs in threads, so two
    use both cores without one process holding a dozen hashes' memory at once."""
    system = Actor.system_actor("seed")
    accounts = _demo_accounts(specs)
    slots = asyncio.Semaphore(2)

    async def create(username: str, display: str, role: str, spec: Spec) -> None:
        async with slots:
            await admins.create_user(ctx, system, username=username, password=DEMO_PASSWORD,
                                     display_name=display, roles=[(role, spec.doc["_id"])])
    await asyncio.gather(*(create(*account) for account in accounts))
    return [username for username, *_ in accounts]


def _demo_accounts(specs: list[Spec]) -> list[tuple[str, str, str, Spec]]:
    """(username, display name, role, organisation) of each demo account."""
    root = specs[0]
    accounts = [("city", "市委组织部（演示）", "city_admin", root),
                ("auditor", "市委巡察办审计员（演示）", "auditor", root)]
    tops = root.children
    districts = [t for t in tops if t.base_kind == "district"]
    industries = [t for t in tops if t.base_kind != "district"]
    for top in [*districts, *industries[:1]]:
        accounts.append((top.code.lower(), f"{top.unit}组织部门（演示）", "committee_admin", top))
    big = max((s for s in specs if s.kind == "branch"), key=lambda s: s.size)
    for branch in [*(_first_led_branch(t) for t in [*districts, *industries[:1]]), big]:
        if branch is None:
            continue
        username = f"sec-{branch.top.code.lower()}-{branch.code.rsplit('-', 1)[1].lower()}"
        secretary = branch.doc["secretary"]["name"] if branch.doc["secretary"] else "书记"
        accounts.append((username, f"{secretary}（{branch.name}）", "secretary", branch))
    return list({a[0]: a for a in accounts}.values())


def _first_led_branch(top: Spec) -> Spec | None:
    return next((s for s in walk(top) if s.kind == "branch" and s.doc["secretary"]), None)


# The member the README's mini-program walkthrough binds with (published, demo only).
API_EXAMPLE_MEMBER = {
    "name": "演示党员", "id_card": "350203199001010018", "phone": "13800000001", "gender": "男",
    "birth_date": "1990-01-01", "party_status": "full", "joined_on": "2015-07-01",
    "full_on": "2016-07-01", "category": "employed", "education": "大学本科",
}


async def _add_api_example_member(ctx: AppContext) -> None:
    """Put the README's example member in the branch of the demo secretary ``sec-d01-b0001``."""
    secretary = await users_model.by_username(ctx.db, "sec-d01-b0001")
    if secretary is None:
        return
    await members.create(ctx, Actor.system_actor("seed"), secretary["roles"][0]["org_id"],
                         API_EXAMPLE_MEMBER)


async def ensure_demo(ctx: AppContext, scale: float, *,
                      progress: Callable[[str], None] = _stderr) -> DemoLogin:
    """``serve --demo``: seed the demo city unless organisations exist; its login."""
    has_orgs = await orgs_model.collection(ctx.db).find_one({"parent_id": None}, {"_id": 1})
    if has_orgs is None:
        report = await seed_city(ctx, scale, progress=progress)
        progress(report.summary())
        await _add_api_example_member(ctx)
    elif await users_model.by_username(ctx.db, "city") is None:
        return DemoLogin("", "", "数据库中已有组织数据（不是演示城市），未生成演示城市和演示账号")
    return DemoLogin("city", DEMO_PASSWORD, DEMO_NOTE)


# The order the start-up summary lists the demo accounts in.
ACCOUNT_ROLES = ("city_admin", "committee_admin", "secretary", "auditor")


async def demo_accounts(ctx: AppContext) -> dict[str, list[str]]:
    """The demo accounts' usernames by role (``serve --demo`` prints them last)."""
    found = [await users_model.by_username(ctx.db, name) for name in ("city", "auditor")]
    for top in ("d", "s"):  # d01 … (district committees), s01 … (industry committees)
        found += await ctx.db[users_model.COLLECTION].find(
            {"username": {"$gte": f"{top}0", "$lt": f"{top}:"}}, {"username": 1, "roles": 1}).to_list()
    found += await ctx.db[users_model.COLLECTION].find(
        {"username": {"$gte": "sec-", "$lt": "sec."}}, {"username": 1, "roles": 1}).to_list()
    by_role: dict[str, list[str]] = {role: [] for role in ACCOUNT_ROLES}
    for user in found:
        if user and user.get("roles") and user["roles"][0]["role"] in by_role:
            by_role[user["roles"][0]["role"]].append(user["username"])
    return {role: sorted(names) for role, names in by_role.items() if names}


async def api_example_member(ctx: AppContext) -> dict[str, Any] | None:
    """The README's example member (演示党员), if the demo city has it."""
    return await members_model.by_id_card(
        ctx.db, ctx.cipher.blind_index(API_EXAMPLE_MEMBER["id_card"], "id_card"))
