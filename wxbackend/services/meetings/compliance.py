"""三会一课 compliance: maintained per branch per month, rolled up for committees.

The rule (DOMAIN.md; types and thresholds in ``[meetings]`` of config/default.toml):

- A meeting *counts* when it is finished and has attendance recorded (at least
  one member present or online). Only meetings held by a 党支部 count.
- A branch-month is **compliant** when every type due that month was held:
  - monthly types (``compliance_monthly_types``) in that month: 主题党日 always;
    支委会 only for branches with a committee (>= ``compliance_committee_min_full``
    full members); 党小组会 only for branches with 党小组;
  - quarterly types (支部党员大会, 党课) at least once in the quarter, judged in
    the quarter's last month (March, June, September, December) only;
  - yearly types (组织生活会) at least once in the calendar year, judged in December.
  In the other months the quarterly and yearly types are not yet due, so they
  do not make the month non-compliant. What a branch owes is taken from the
  organisation when a meeting is counted.
- Attendance rate = attended (present + online) / (expected - excused): members
  on approved leave are excused, not absent.
- A branch with no counted meeting in a month has no document and is
  non-compliant; committee counts are "branches in subtree - compliant".

``meetings.finish`` calls :func:`meeting_finished` once per transition, and a
cancelled or deleted finished meeting calls :func:`meeting_unfinished`; both are
idempotent anyway (each document records which meetings it has counted)::

    await compliance.meeting_finished(ctx, meeting)
    status = await compliance.branch_status(ctx, actor, branch_id, "2026-03")
    summary = await compliance.committee_summary(ctx, actor, district_id, "2026-03")
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId

from models import compliance as model
from models import orgs as orgs_model
from models.enums import MEETING_TYPES
from wxbackend.context import AppContext
from wxbackend.errors import InvalidInput
from wxbackend.services import orgs
from wxbackend.services.accounts.access import Actor
from wxbackend.services.orgs import orgtree

MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
# How often settling a document retries when counts keep moving under it.
SETTLE_ATTEMPTS = 20


@dataclass(frozen=True)
class Rules:
    monthly: tuple[str, ...]
    quarterly: tuple[str, ...]
    yearly: tuple[str, ...]
    committee_min_full: int

    @classmethod
    def from_settings(cls, settings: Any) -> Rules:
        section = settings.meetings

        def types(text: str) -> tuple[str, ...]:
            return tuple(t.strip() for t in text.split(",") if t.strip() in MEETING_TYPES)

        return cls(types(section.compliance_monthly_types), types(section.compliance_quarterly_types),
                   types(section.compliance_yearly_types), section.compliance_committee_min_full)

    def required(self, org: dict[str, Any]) -> dict[str, list[str]]:
        """What a branch owes: 支委会 only with a committee, 党小组会 only with groups."""
        monthly = [t for t in self.monthly
                   if (t != "committee" or org.get("full_member_count", 0) >= self.committee_min_full)
                   and (t != "group" or org.get("child_count", 0) > 0)]
        return {"monthly": monthly, "quarterly": list(self.quarterly), "yearly": list(self.yearly)}


# -- periods -----------------------------------------------------------------------

def parse_month(text: str) -> str:
    if not isinstance(text, str) or not MONTH.match(text):
        raise InvalidInput("bad_month", "月份格式应为 YYYY-MM")
    return text


def quarter_of(month: str) -> str:
    return f"{month[:4]}-Q{(int(month[5:7]) - 1) // 3 + 1}"


def quarter_months(month: str) -> list[str]:
    first = (int(month[5:7]) - 1) // 3 * 3 + 1
    return [f"{month[:4]}-{m:02d}" for m in range(first, first + 3)]


def quarter_end(month: str) -> str:
    return quarter_months(month)[-1]


def year_end(month: str) -> str:
    return f"{month[:4]}-12"


def shift_month(month: str, delta: int) -> str:
    index = int(month[:4]) * 12 + int(month[5:7]) - 1 + delta
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


# -- the judgement (pure: the seed uses it too) ---------------------------------------

def missing_types(doc: dict[str, Any]) -> list[str]:
    """Types due in the document's month that were not held (empty = compliant)."""
    required = doc.get("required") or {}
    counts = doc.get("counts") or {}
    missing = [t for t in required.get("monthly", []) if counts.get(t, 0) < 1]
    month = doc["month"]
    if month == quarter_end(month):
        quarter = doc.get("quarter_counts") or {}
        missing += [t for t in required.get("quarterly", []) if quarter.get(t, 0) < 1]
    if month == year_end(month):
        year = doc.get("year_counts") or {}
        missing += [t for t in required.get("yearly", []) if year.get(t, 0) < 1]
    return missing


def attendance_rate(attended: int, expected: int, excused: int) -> float | None:
    """attended / (expected - excused); None when nobody was expected."""
    base = expected - excused
    return None if base <= 0 else min(1.0, attended / base)


def contribution(meeting: dict[str, Any]) -> list[Any] | None:
    """[type, expected, attended, excused] of a meeting that counts, else None."""
    counts = meeting.get("counts") or {}
    attended = counts.get("present", 0) + counts.get("online", 0)
    if meeting.get("status") != "finished" or attended < 1:
        return None
    return [meeting["type"], meeting.get("expected_count", 0), attended, counts.get("excused", 0)]


# -- maintenance ---------------------------------------------------------------------

async def _branch(ctx: AppContext, org_id: ObjectId) -> dict[str, Any] | None:
    org = await orgs_model.get(ctx.db, org_id)
    return org if org is not None and org["type"] == "branch" else None


def _roles(rules: Rules, meeting_type: str, month: str) -> list[tuple[str, str, str]]:
    """(document month, marker map, counts map) the meeting is counted in."""
    roles = [(month, "meetings", "counts")]
    if meeting_type in rules.quarterly:
        roles.append((quarter_end(month), "quarter_meetings", "quarter_counts"))
    if meeting_type in rules.yearly:
        roles.append((year_end(month), "year_meetings", "year_counts"))
    return roles


async def meeting_finished(ctx: AppContext, meeting: dict[str, Any]) -> bool:
    """Count a finished meeting in its branch's compliance; True when this call counted
    it in its month (each further period document is applied once by whichever
    call gets there first, so an interrupted call is completed by a retry)."""
    share = contribution(meeting)
    org = await _branch(ctx, meeting["org_id"]) if share else None
    if share is None or org is None:
        return False
    rules = Rules.from_settings(ctx.settings)
    required = rules.required(org)
    mid, kind, changed = str(meeting["_id"]), meeting["type"], False
    for month, markers, counts in _roles(rules, kind, meeting["month"]):
        await model.ensure(ctx.db, org, month, quarter_of(month), required)
        key = model.doc_id(org["_id"], month)
        inc: dict[str, int] = {f"{counts}.{kind}": 1, "rev": 1}
        if markers == "meetings":
            inc.update({"expected_sum": share[1], "attended_sum": share[2], "excused_sum": share[3]})
        value = share if markers == "meetings" else kind
        if await model.apply_once(ctx.db, key, f"{markers}.{mid}", False,
                                  {"$set": {f"{markers}.{mid}": value, "required": required},
                                   "$inc": inc}):
            changed = changed or markers == "meetings"
            await _settle(ctx, key, org["org_ancestors"], month)
    return changed


async def meeting_unfinished(ctx: AppContext, meeting: dict[str, Any]) -> bool:
    """Take back what :func:`meeting_finished` counted (cancelled or deleted); idempotent.
    True when this call took it out of its month."""
    rules = Rules.from_settings(ctx.settings)
    mid, org_id, changed = str(meeting["_id"]), meeting["org_id"], False
    for month, markers, counts in _roles(rules, meeting["type"], meeting["month"]):
        key = model.doc_id(org_id, month)
        doc = await model.get_by_key(ctx.db, key)
        value = ((doc or {}).get(markers) or {}).get(mid)
        if value is None:
            continue
        kind = value[0] if markers == "meetings" else value
        inc: dict[str, int] = {f"{counts}.{kind}": -1, "rev": 1}
        if markers == "meetings":
            inc.update({"expected_sum": -value[1], "attended_sum": -value[2], "excused_sum": -value[3]})
        if await model.apply_once(ctx.db, key, f"{markers}.{mid}", True,
                                  {"$unset": {f"{markers}.{mid}": ""}, "$inc": inc}):
            changed = changed or markers == "meetings"
            await _settle(ctx, key, doc["org_ancestors"], month)
    return changed


async def _settle(ctx: AppContext, key: str, org_ancestors: list[ObjectId], month: str) -> None:
    """Bring ``compliant`` in line with the counts, and the roll-ups with it.

    The flip is conditional on the revision it was judged from, so of racing
    callers exactly one moves the roll-ups, and whoever changed the counts
    last settles on the final counts."""
    for _ in range(SETTLE_ATTEMPTS):
        doc = await model.get_by_key(ctx.db, key)
        if doc is None:
            return
        now = not missing_types(doc)
        if now == doc["compliant"]:
            return
        if await model.set_compliant(ctx.db, key, doc["rev"], doc["compliant"], now):
            await model.adjust_rollups(ctx.db, org_ancestors[:-1], month, 1 if now else -1)
            return


# -- the same counting in memory (the seed's bulk load) ---------------------------------

def count_in_memory(docs: dict[str, dict[str, Any]], rules: Rules, org: dict[str, Any],
                    required: dict[str, list[str]], meeting: dict[str, Any]) -> None:
    """Apply to documents held in ``docs`` (by ``_id``) exactly what :func:`meeting_finished`
    writes, so that a bulk load equals a replay of every meeting finishing."""
    share = contribution(meeting)
    if share is None:
        return
    mid, kind = str(meeting["_id"]), meeting["type"]
    for month, markers, counts in _roles(rules, kind, meeting["month"]):
        key = model.doc_id(org["_id"], month)
        doc = docs.get(key) or docs.setdefault(key, model.new_doc(org, month, quarter_of(month), required))
        marked = doc.setdefault(markers, {})
        if mid in marked:
            continue
        marked[mid] = share if markers == "meetings" else kind
        doc["required"] = required
        tally = doc.setdefault(counts, {})
        tally[kind] = tally.get(kind, 0) + 1
        doc["rev"] += 1
        if markers == "meetings":
            for name, value in zip(("expected_sum", "attended_sum", "excused_sum"), share[1:], strict=True):
                doc[name] += value


def settle_in_memory(docs: dict[str, dict[str, Any]]) -> Counter:
    """Judge every document; the roll-up counts ``{(org_id, month): compliant branches}``."""
    rollups: Counter = Counter()
    for doc in docs.values():
        doc["compliant"] = not missing_types(doc)
        if doc["compliant"]:
            rollups.update((o, doc["month"]) for o in doc["org_ancestors"][:-1])
    return rollups


async def rebuild_rollups(ctx: AppContext, month: str) -> dict[ObjectId, int]:
    """Recompute a month's roll-ups from its compliance documents (after a subtree
    moved, or to repair a crash between a flip and its roll-up)."""
    counts: Counter = Counter()
    for doc in await model.in_month(ctx.db, parse_month(month)):
        counts.update(doc["org_ancestors"][:-1])
    await model.replace_rollups(ctx.db, month, dict(counts))
    return dict(counts)


async def subtree_moved(ctx: AppContext, org_ids: list[ObjectId], old_prefix: list[ObjectId],
                        new_prefix: list[ObjectId]) -> None:
    """A subtree moved: its compliant branch-months leave the old ancestors' roll-ups
    and join the new ones' (the subtree's own nodes keep theirs): a ``subtree_moved`` hook."""
    per_month: Counter = Counter()
    for org_id in org_ids:
        for doc in await model.of_org_months(ctx.db, org_id, "0000-00", "9999-99"):
            per_month[doc["month"]] += 1 if doc.get("compliant") else 0
    for month, moved in per_month.items():
        if moved:
            await model.adjust_rollups(ctx.db, old_prefix, month, -moved)
            await model.adjust_rollups(ctx.db, new_prefix, month, moved)


# -- what pages show -----------------------------------------------------------------

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

    @property
    def rate(self) -> float | None:
        return attendance_rate(self.attended, self.expected, self.excused)

    @property
    def missing_labels(self) -> list[str]:
        return [MEETING_TYPES.get(t, t) for t in self.missing]


async def branch_status(ctx: AppContext, actor: Actor, org_id: ObjectId | str,
                        month: str) -> BranchStatus:
    org = await orgs.get(ctx, orgs.parse_id(org_id))
    actor.require("meeting.view", org["org_ancestors"])
    month = parse_month(month)
    months = [m for m in quarter_months(month) if m <= month]
    docs = await model.get_many(ctx.db, [org["_id"]], {*months, year_end(month)})
    return status_from_docs(Rules.from_settings(ctx.settings), org, month, docs)


def status_from_docs(rules: Rules, org: dict[str, Any], month: str,
                     docs: dict[str, dict[str, Any]]) -> BranchStatus:
    here = docs.get(model.doc_id(org["_id"], month))
    required = (here or {}).get("required") or rules.required(org)
    empty = {"month": month, "required": required}
    quarter: Counter = Counter()
    for m in quarter_months(month):
        if m <= month:
            quarter.update((docs.get(model.doc_id(org["_id"], m)) or {}).get("counts") or {})
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
        year_counts={t: year.get(t, 0) for t in rules.yearly}, required=required)


@dataclass
class ChildRow:
    org: dict[str, Any]
    branches: int
    compliant: int
    status: BranchStatus | None = None  # for a branch child

    @property
    def non_compliant(self) -> int:
        return max(0, self.branches - self.compliant)


@dataclass
class CommitteeSummary:
    org: dict[str, Any]
    month: str
    branches: int
    compliant: int
    children: list[ChildRow] = field(default_factory=list)

    @property
    def non_compliant(self) -> int:
        return max(0, self.branches - self.compliant)

    @property
    def failing_children(self) -> list[ChildRow]:
        return [c for c in self.children if c.non_compliant]


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


async def committee_summary(ctx: AppContext, actor: Actor, org_id: ObjectId | str,
                            month: str) -> CommitteeSummary:
    """Compliant / non-compliant branches of a subtree and of each child organisation:
    maintained counters and point lookups, never a read of the subtree."""
    org = await orgs.get(ctx, orgs.parse_id(org_id))
    actor.require("meeting.view", org["org_ancestors"])
    month = parse_month(month)
    tree = await orgtree.snapshot(ctx)
    totals = branch_counts(tree)
    kids = [tree.nodes[c] for c in tree.children.get(org["_id"], [])
            if tree.nodes[c].get("status") == "active" and totals.get(c, 0)]
    groups = [k["_id"] for k in kids if k["type"] != "branch"]
    rolled = await model.rollups_of(ctx.db, [org["_id"], *groups], month)
    branch_kids = [k for k in kids if k["type"] == "branch"]
    statuses = await _statuses(ctx, branch_kids, month)
    rows = [ChildRow(k, totals[k["_id"]], rolled.get(k["_id"], 0)) if k["type"] != "branch"
            else ChildRow(k, 1, int(statuses[k["_id"]].compliant), statuses[k["_id"]]) for k in kids]
    return CommitteeSummary(org, month, totals.get(org["_id"], 0), rolled.get(org["_id"], 0), rows)


async def _statuses(ctx: AppContext, branches: list[dict[str, Any]],
                    month: str) -> dict[ObjectId, BranchStatus]:
    if not branches:
        return {}
    rules = Rules.from_settings(ctx.settings)
    ids = [b["_id"] for b in branches]
    full = {o["_id"]: o for o in await orgs_model.collection(ctx.db).find(
        {"_id": {"$in": ids}}, {"org_ancestors": 1, "full_member_count": 1, "child_count": 1}).to_list()}
    months = {*[m for m in quarter_months(month) if m <= month], year_end(month)}
    docs = await model.get_many(ctx.db, ids, months)
    return {b: status_from_docs(rules, full[b], month, docs) for b in ids if b in full}


async def branch_year(ctx: AppContext, actor: Actor, org_id: ObjectId | str,
                      last_month: str) -> list[BranchStatus]:
    """The twelve months up to ``last_month`` of one branch (ledger index)."""
    org = await orgs.get(ctx, orgs.parse_id(org_id))
    actor.require("meeting.view", org["org_ancestors"])
    last_month = parse_month(last_month)
    months = [shift_month(last_month, -i) for i in range(11, -1, -1)]
    wanted = {q for m in months for q in quarter_months(m)} | {year_end(m) for m in months}
    docs = await model.get_many(ctx.db, [org["_id"]], wanted)
    rules = Rules.from_settings(ctx.settings)
    return [status_from_docs(rules, org, m, docs) for m in months]
