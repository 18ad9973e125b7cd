"""三会一课 compliance as pages show it: a branch's months, a committee's branches, trends.

Everything here reads maintained documents and counters (:mod:`models.compliance`)
by point lookups, never meetings and never a subtree. Each view knows where its
month stands (``phase``): an ended month is judged (达标 / 未达标), the running
month is in progress (已开展 / 待开展), a future month has not begun::

    status = await branch_status(ctx, actor, branch_id, "2026-03")
    summary = await committee_summary(ctx, actor, district_id, "2026-03")
    summary.rate, [row.rate for row in summary.children]
    points = await committee_trend(ctx, actor, district_id, "2026-03")   # 12 months

Raises ``Forbidden`` outside the actor's scope and ``bad_month`` for a bad month.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId

from models import compliance as model
from models import orgs as orgs_model
from models.enums import MEETING_TYPES
from wxbackend.context import AppContext
from wxbackend.services import orgs
from wxbackend.services.accounts.access import Actor
from wxbackend.services.meetings.compliance_core import (
    CLOSED,
    RUNNING,
    Rules,
    attendance_rate,
    missing_types,
    months_back,
    parse_month,
    phase_of,
    quarter_end,
    quarter_months,
    ratio,
    year_end,
)
from wxbackend.services.meetings.compliance_months import prepare
from wxbackend.services.orgs import orgtree

TREND_MONTHS = 12
STATUS_FIELDS = {"org_ancestors": 1, "full_member_count": 1, "child_count": 1}


@dataclass
class BranchStatus:
    """One branch in one month, as the panel on its page shows it."""

    org_id: ObjectId
    month: str
    compliant: bool
    missing: list[str]
    counts: dict[str, int]
    meetings: int
    expected: int
    attended: int
    excused: int
    quarter_counts: dict[str, int]
    quarter_judged: bool
    year_counts: dict[str, int]
    required: dict[str, list[str]]
    phase: str = CLOSED
    basis: dict[str, int] | None = None  # the branch as the month recorded it
    recorded: bool = False               # the month has a document

    @property
    def rate(self) -> float | None:
        return attendance_rate(self.attended, self.expected, self.excused)

    @property
    def missing_labels(self) -> list[str]:
        return [MEETING_TYPES.get(t, t) for t in self.missing]

    @property
    def in_progress(self) -> bool:
        return self.phase == RUNNING


def status_from_docs(rules: Rules, org: dict[str, Any], month: str, docs: dict[str, dict[str, Any]],
                     running: str = "") -> BranchStatus:
    """The status of ``month`` from the branch's documents (by ``_id``). A month without a
    document owes what the branch owes now (only the running month, once pages have
    prepared the documents)."""
    here = docs.get(model.doc_id(org["_id"], month))
    required = (here or {}).get("required") or rules.required(org)
    empty = {"month": month, "required": required}
    quarter: dict[str, int] = {}
    for m in quarter_months(month):
        if m <= month:
            for kind, n in ((docs.get(model.doc_id(org["_id"], m)) or {}).get("counts") or {}).items():
                quarter[kind] = quarter.get(kind, 0) + n
    year = (docs.get(model.doc_id(org["_id"], year_end(month))) or {}).get("year_counts") or {}
    doc = here or empty
    counts = dict(doc.get("counts") or {})
    return BranchStatus(
        org_id=org["_id"], month=month, compliant=bool(here and here["compliant"]),
        missing=missing_types(doc), counts=counts, meetings=sum(counts.values()),
        expected=doc.get("expected_sum", 0), attended=doc.get("attended_sum", 0),
        excused=doc.get("excused_sum", 0),
        quarter_counts={t: quarter.get(t, 0) for t in rules.quarterly},
        quarter_judged=month == quarter_end(month),
        year_counts={t: year.get(t, 0) for t in rules.yearly}, required=required,
        phase=phase_of(month, running) if running else CLOSED,
        basis=(here or {}).get("basis") or (None if here else rules.basis(org)), recorded=here is not None)


def _wanted(month: str) -> set[str]:
    return {*[m for m in quarter_months(month) if m <= month], year_end(month)}


async def _statuses(ctx: AppContext, branches: list[dict[str, Any]], month: str, *,
                    create: bool = True) -> dict[ObjectId, BranchStatus]:
    """Statuses of ``month`` for these branches (documents with ``org_ancestors``, the
    member counters and ``child_count``), their documents prepared first."""
    if not branches:
        return {}
    rules = Rules.from_settings(ctx.settings)
    ids, months = [b["_id"] for b in branches], _wanted(month)
    docs = await model.get_many(ctx.db, ids, months)
    if await prepare(ctx, rules, branches, month, docs, create=create):
        docs = await model.get_many(ctx.db, ids, months)
    running = ctx.clock.month()
    return {b["_id"]: status_from_docs(rules, b, month, docs, running) for b in branches}


async def branch_status(ctx: AppContext, actor: Actor, org_id: ObjectId | str,
                        month: str) -> BranchStatus:
    org = await orgs.get(ctx, orgs.parse_id(org_id))
    actor.require("meeting.view", org["org_ancestors"])
    month = parse_month(month)
    opened = await model.opened(ctx.db, [month])
    return (await _statuses(ctx, [org], month, create=month not in opened))[org["_id"]]


async def branch_year(ctx: AppContext, actor: Actor, org_id: ObjectId | str,
                      last_month: str) -> list[BranchStatus]:
    """The twelve months up to ``last_month`` of one branch (ledger index)."""
    org = await orgs.get(ctx, orgs.parse_id(org_id))
    actor.require("meeting.view", org["org_ancestors"])
    months = months_back(parse_month(last_month), TREND_MONTHS)
    wanted = {q for m in months for q in quarter_months(m)} | {year_end(m) for m in months}
    docs = await model.get_many(ctx.db, [org["_id"]], wanted)
    rules = Rules.from_settings(ctx.settings)
    opened = await model.opened(ctx.db, months)
    wrote = False
    for m in months:
        wrote = await prepare(ctx, rules, [org], m, docs, create=m not in opened) or wrote
    if wrote:
        docs = await model.get_many(ctx.db, [org["_id"]], wanted)
    running = ctx.clock.month()
    return [status_from_docs(rules, org, m, docs, running) for m in months]


# -- committees ----------------------------------------------------------------------

class BranchTally:
    """What a count of judged branches reads as; mixed into the dataclasses below."""

    branches: int
    compliant: int

    @property
    def non_compliant(self) -> int:
        return max(0, self.branches - self.compliant)

    @property
    def rate(self) -> float | None:
        return ratio(self.compliant, self.branches)


@dataclass
class ChildRow(BranchTally):
    org: dict[str, Any]
    branches: int
    compliant: int
    status: BranchStatus | None = None  # for a branch child


@dataclass
class CommitteeSummary(BranchTally):
    org: dict[str, Any]
    month: str
    branches: int
    compliant: int
    children: list[ChildRow] = field(default_factory=list)
    phase: str = CLOSED

    @property
    def in_progress(self) -> bool:
        return self.phase == RUNNING

    @property
    def failing_children(self) -> list[ChildRow]:
        return [c for c in self.children if c.non_compliant]


@dataclass
class TrendPoint:
    """A committee's month: compliant branches of those it was judged on."""

    month: str
    branches: int
    compliant: int
    phase: str

    @property
    def rate(self) -> float | None:
        return ratio(self.compliant, self.branches)


def branch_counts(tree: orgtree.OrgTree) -> dict[ObjectId, int]:
    """Active branches in each organisation's subtree, once per tree snapshot."""
    cached = getattr(tree, "_branch_counts", None)
    if cached is not None:
        return cached
    counts: dict[ObjectId, int] = {}
    for node_id in reversed(tree.order):  # children before parents
        node = tree.nodes[node_id]
        own = 1 if node["type"] == "branch" and node.get("status") == "active" else 0
        counts[node_id] = own + sum(counts.get(c, 0) for c in tree.children.get(node_id, []))
    tree._branch_counts = counts  # type: ignore[attr-defined]  # dies with the snapshot
    return counts


async def _frozen(ctx: AppContext, months: list[str]) -> set[str]:
    """Months whose roll-ups' ``branches`` is the denominator: ended and opened for every branch."""
    running = ctx.clock.month()
    return await model.opened(ctx.db, [m for m in months if m < running])


async def committee_summary(ctx: AppContext, actor: Actor, org_id: ObjectId | str,
                            month: str) -> CommitteeSummary:
    """Compliant / non-compliant branches of a subtree and of each child organisation:
    maintained counters and point lookups, never a read of the subtree. An ended month
    counts the branches it was judged on; the running month, today's."""
    org = await orgs.get(ctx, orgs.parse_id(org_id))
    actor.require("meeting.view", org["org_ancestors"])
    month = parse_month(month)
    tree = await orgtree.snapshot(ctx)
    totals = branch_counts(tree)
    frozen = month in await _frozen(ctx, [month])
    kids = [tree.nodes[c] for c in tree.children.get(org["_id"], [])
            if tree.nodes[c].get("status") == "active" and totals.get(c, 0)]
    groups = [k["_id"] for k in kids if k["type"] != "branch"]
    rolled = await model.rollup_docs(ctx.db, [(o, month) for o in [org["_id"], *groups]])

    def counted(o: ObjectId) -> tuple[int, int]:
        found = rolled.get(model.rollup_id(o, month)) or {}
        return found.get("compliant", 0), found.get("branches", 0) if frozen else totals.get(o, 0)

    branch_kids = await _full(ctx, [k["_id"] for k in kids if k["type"] == "branch"])
    statuses = await _statuses(ctx, branch_kids, month, create=not frozen)
    rows = []
    for kid in kids:
        if kid["type"] != "branch":
            compliant, branches = counted(kid["_id"])
            rows.append(ChildRow(kid, branches, compliant))
        elif kid["_id"] in statuses and (statuses[kid["_id"]].recorded or not frozen):
            status = statuses[kid["_id"]]
            rows.append(ChildRow(kid, 1, int(status.compliant), status))
    rows = [r for r in rows if r.branches]  # in an ended month: those that had branches then
    compliant, branches = counted(org["_id"])
    return CommitteeSummary(org, month, branches, compliant, rows, phase_of(month, ctx.clock.month()))


async def _full(ctx: AppContext, ids: list[ObjectId]) -> list[dict[str, Any]]:
    """The branches with what their statuses need (the tree snapshot lacks member counts)."""
    if not ids:
        return []
    found = {o["_id"]: o for o in await orgs_model.collection(ctx.db).find(
        {"_id": {"$in": ids}}, STATUS_FIELDS).to_list()}
    return [found[i] for i in ids if i in found]


async def committee_trend(ctx: AppContext, actor: Actor, org_id: ObjectId | str, last_month: str,
                          count: int = TREND_MONTHS) -> list[TrendPoint]:
    """The committee's compliance rate over ``count`` months up to ``last_month`` (oldest
    first): ``count`` roll-up point lookups. An ended month with nothing recorded (before
    the platform, or before months were opened) has no rate rather than 0 %."""
    org = await orgs.get(ctx, orgs.parse_id(org_id))
    actor.require("meeting.view", org["org_ancestors"])
    months = months_back(parse_month(last_month), count)
    today = branch_counts(await orgtree.snapshot(ctx)).get(org["_id"], 0)
    rolled = await model.rollup_docs(ctx.db, [(org["_id"], m) for m in months])
    frozen = await _frozen(ctx, months)
    running = ctx.clock.month()
    points = []
    for m in months:
        found = rolled.get(model.rollup_id(org["_id"], m))
        if found is None and m < running and m not in frozen:
            points.append(TrendPoint(m, 0, 0, CLOSED))  # nothing recorded: no rate, not 0 %
            continue
        found = found or {}
        branches = found.get("branches", 0) if m in frozen else today
        points.append(TrendPoint(m, branches, found.get("compliant", 0), phase_of(m, running)))
    return points
