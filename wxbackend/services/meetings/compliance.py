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
  do not make the month non-compliant. What a branch owes is judged by the branch
  as it was in that month and recorded on the month's document: it follows the
  branch while the month runs and is frozen once the month has ended
  (:mod:`.compliance_months`), so today's membership never moves a past month.
- Attendance rate = attended (present + online) / (expected - excused): members
  on approved leave are excused, not absent.
- A branch with no counted meeting in a month is non-compliant; committee
  counts are "branches - compliant" (the branches the month was judged on once
  it has ended, :mod:`models.compliance`).
- The running month is *in progress*: pages show 已开展 / 待开展 for it, not
  达标 / 未达标 (on the 3rd of a month nobody has failed yet).

The rule and its periods are :mod:`.compliance_core`, the documents' life over a
month :mod:`.compliance_months`, what pages read (statuses, committee summaries,
trends) :mod:`.compliance_views`; callers use the names re-exported here.

``meetings.finish`` calls :func:`meeting_finished` once per transition, and a
cancelled or deleted finished meeting calls :func:`meeting_unfinished`; both are
idempotent anyway (each document records which meetings it has counted)::

    await compliance.meeting_finished(ctx, meeting)
    status = await compliance.branch_status(ctx, actor, branch_id, "2026-03")
    summary = await compliance.committee_summary(ctx, actor, district_id, "2026-03")
    points = await compliance.committee_trend(ctx, actor, district_id, "2026-03")  # 12 months
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from bson import ObjectId

from models import compliance as model
from models import orgs as orgs_model
from wxbackend.context import AppContext
from wxbackend.services.meetings.compliance_core import (
    CLOSED,
    FUTURE,
    RUNNING,
    Rules,
    attendance_rate,
    contribution,
    missing_types,
    parse_month,
    phase_of,
    quarter_end,
    quarter_months,
    quarter_of,
    shift_month,
    year_end,
)
from wxbackend.services.meetings.compliance_months import (
    ensure_doc,
    open_month,
    open_running_month,
    rebuild_rollups,
    settle,
    subtree_moved,
)
from wxbackend.services.meetings.compliance_views import (
    BranchStatus,
    ChildRow,
    CommitteeSummary,
    TrendPoint,
    branch_counts,
    branch_status,
    branch_year,
    committee_summary,
    committee_trend,
    status_from_docs,
)

__all__ = [
    "CLOSED", "FUTURE", "RUNNING", "BranchStatus", "ChildRow", "CommitteeSummary", "Rules",
    "TrendPoint", "attendance_rate", "branch_counts", "branch_status", "branch_year",
    "committee_summary", "committee_trend", "contribution", "count_in_memory",
    "documents_in_memory", "meeting_finished", "meeting_unfinished", "missing_types",
    "open_in_memory", "open_month", "open_running_month", "parse_month", "phase_of", "quarter_end",
    "quarter_months", "quarter_of", "rebuild_rollups", "settle_in_memory", "shift_month",
    "status_from_docs", "subtree_moved", "year_end",
]


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
    call gets there first, so an interrupted call is completed by a retry).

    A document of the running (or a future) month takes the branch's requirement as
    it is now along with the count; an ended month's requirement stays as recorded."""
    share = contribution(meeting)
    org = await _branch(ctx, meeting["org_id"]) if share else None
    if share is None or org is None:
        return False
    rules = Rules.from_settings(ctx.settings)
    running = ctx.clock.month()
    mid, kind, changed = str(meeting["_id"]), meeting["type"], False
    for month, markers, counts in _roles(rules, kind, meeting["month"]):
        await ensure_doc(ctx, rules, org, month)
        key = model.doc_id(org["_id"], month)
        inc: dict[str, int] = {f"{counts}.{kind}": 1, "rev": 1}
        if markers == "meetings":
            inc.update({"expected_sum": share[1], "attended_sum": share[2], "excused_sum": share[3]})
        changes: dict[str, Any] = {f"{markers}.{mid}": share if markers == "meetings" else kind}
        if month >= running:
            changes.update(required=rules.required(org), basis=rules.basis(org))
        if await model.apply_once(ctx.db, key, f"{markers}.{mid}", False, {"$set": changes, "$inc": inc}):
            changed = changed or markers == "meetings"
            await settle(ctx, key, org["org_ancestors"], month)
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
            await settle(ctx, key, doc["org_ancestors"], month)
    return changed


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
        doc = docs.get(key) or docs.setdefault(key, model.new_doc(org, month, quarter_of(month), required,
                                                                  rules.basis(org)))
        marked = doc.setdefault(markers, {})
        if mid in marked:
            continue
        marked[mid] = share if markers == "meetings" else kind
        tally = doc.setdefault(counts, {})
        tally[kind] = tally.get(kind, 0) + 1
        doc["rev"] += 1
        if markers == "meetings":
            for name, value in zip(("expected_sum", "attended_sum", "excused_sum"), share[1:], strict=True):
                doc[name] += value


def open_in_memory(docs: dict[str, dict[str, Any]], rules: Rules, org: dict[str, Any],
                   months: list[str]) -> None:
    """Give the branch a document for each of ``months`` in ``docs`` (what opening each
    month did), with the requirement of the branch as it is (the seed's branches do not
    change over the year)."""
    for month in months:
        docs.setdefault(model.doc_id(org["_id"], month),
                        model.new_doc(org, month, quarter_of(month), rules.required(org), rules.basis(org)))


def settle_in_memory(docs: dict[str, dict[str, Any]]) -> Counter:
    """Judge every document; the roll-up counts ``{(org_id, month): compliant branches}``."""
    rollups: Counter = Counter()
    for doc in docs.values():
        doc["compliant"] = not missing_types(doc)
        if doc["compliant"]:
            rollups.update((o, doc["month"]) for o in doc["org_ancestors"][:-1])
    return rollups


def documents_in_memory(docs: dict[str, dict[str, Any]]) -> Counter:
    """The roll-ups' branch counts ``{(org_id, month): branch documents}`` of ``docs``."""
    return Counter((o, d["month"]) for d in docs.values() for o in d["org_ancestors"][:-1])
