"""三会一课 compliance documents over a month's life: opened, kept in line, then closed.

A branch-month is judged by the branch as it was in that month, and a judged month
does not move afterwards (issue #13: importing members today must not make last
February owe a 支委会). So each document records the requirement it is judged on
(``basis``: full members and 党小组, and the ``required`` types they give):

- **opening**: the cron job :func:`open_running_month` (``[jobs] compliance_months``,
  daily, idempotent) gives every active branch its document for the running month,
  with the requirement of the branch as it is; a meeting counted or a page read
  creates a missing one the same way (:func:`ensure_doc`);
- **running**: while its month is the clock's month a document follows the branch
  (:func:`align`: the daily job, each meeting counted, each page read), and
  ``compliant`` and the roll-ups are settled again when the requirement changes;
- **closed**: once the month has ended nothing rewrites ``basis`` or ``required``.
  Meetings of that month finished or cancelled late still count or uncount (they are
  the month's facts), judged against the recorded requirement. A past month without
  a document (from before opening existed) is given one on first read, so it
  stops moving from then on.

Roll-ups count, besides compliant branches, the branch documents of a month
(``branches``), so a committee's ended month keeps the denominator it had::

    await open_running_month(ctx)
    await align(ctx, rules, branch, doc)        # the running month only
    await rebuild_rollups(ctx, "2026-03")
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from bson import ObjectId

from models import compliance as model
from models import orgs as orgs_model
from wxbackend import jobs
from wxbackend.context import AppContext
from wxbackend.services.meetings.compliance_core import (
    Rules,
    missing_types,
    parse_month,
    quarter_of,
)

# How often settling a document retries when counts keep moving under it.
SETTLE_ATTEMPTS = 20
BRANCH_FIELDS = {"org_ancestors": 1, "full_member_count": 1, "child_count": 1, "status": 1, "type": 1}


async def settle(ctx: AppContext, key: str, org_ancestors: list[ObjectId], month: str) -> None:
    """Bring ``compliant`` in line with the counts and requirement, and the roll-ups with it.

    The flip is conditional on the revision it was judged from, so of racing
    callers exactly one moves the roll-ups, and whoever changed the document
    last settles on its final state."""
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


async def ensure_doc(ctx: AppContext, rules: Rules, org: dict[str, Any], month: str) -> bool:
    """Give the branch its document for ``month`` unless it has one, recording the
    requirement of the branch as it is now; True when this call created it."""
    created = await model.ensure(ctx.db, org, month, quarter_of(month), rules.required(org), rules.basis(org))
    if created:
        await model.adjust_rollups(ctx.db, org["org_ancestors"][:-1], month, branches=1)
    return created


async def align(ctx: AppContext, rules: Rules, org: dict[str, Any], doc: dict[str, Any]) -> bool:
    """Rewrite the running month's requirement when the branch changed; True when it did.

    Never touches a month that is not the clock's month: an ended month keeps the
    requirement it was judged on."""
    basis = rules.basis(org)
    for _ in range(SETTLE_ATTEMPTS):
        if doc["month"] != ctx.clock.month() or doc.get("basis") == basis:
            return False
        if await model.set_requirement(ctx.db, doc["_id"], doc["rev"], rules.required_for(basis), basis):
            await settle(ctx, doc["_id"], doc["org_ancestors"], doc["month"])
            return True
        doc = await model.get_by_key(ctx.db, doc["_id"])  # counted meanwhile: read again
        if doc is None:
            return False
    return False


async def prepare(ctx: AppContext, rules: Rules, orgs: list[dict[str, Any]], month: str,
                  docs: dict[str, dict[str, Any]], *, create: bool = True) -> bool:
    """Before a page shows ``month`` of these branches: the running month follows each
    branch, a past month without a document gets one (frozen from then on) unless
    ``create`` is false (a month opened for every branch: one without a document did
    not exist then). True when something was written (the caller reads again)."""
    running, wrote = ctx.clock.month(), False
    for org in orgs:
        doc = docs.get(model.doc_id(org["_id"], month))
        if doc is not None:
            wrote = await align(ctx, rules, org, doc) or wrote
        elif create and month < running:
            wrote = await ensure_doc(ctx, rules, org, month) or wrote
    return wrote


# -- opening months ------------------------------------------------------------------

async def active_branches(ctx: AppContext) -> list[dict[str, Any]]:
    """Every active branch with what its requirement depends on (one indexed read per root)."""
    found: list[dict[str, Any]] = []
    for root in await orgs_model.roots(ctx.db):
        cursor = orgs_model.collection(ctx.db).find({"org_ancestors": root["_id"], "type": "branch"},
                                                    BRANCH_FIELDS)
        found.extend([o async for o in cursor if o.get("status") == "active"])
    return found


async def open_month(ctx: AppContext, month: str) -> dict[str, int]:
    """Give every active branch its document for ``month`` and bring the existing ones in
    line with their branch (running month only); idempotent. Counts of what it did."""
    rules = Rules.from_settings(ctx.settings)
    branches = await active_branches(ctx)
    fresh = [model.new_doc(b, month, quarter_of(month), rules.required(b), rules.basis(b)) for b in branches]
    created = await model.insert_new(ctx.db, fresh)
    per_org: Counter = Counter(o for d in created for o in d["org_ancestors"][:-1])
    await model.bump_rollups(ctx.db, month, {o: (0, n) for o, n in per_org.items()})
    made = {d["_id"] for d in created}
    by_id = {b["_id"]: b for b in branches}
    aligned = 0
    fields = {"org_id": 1, "org_ancestors": 1, "month": 1, "basis": 1, "rev": 1}
    for doc in await model.in_month(ctx.db, month, fields):
        org = by_id.get(doc["org_id"])
        if org is not None and doc["_id"] not in made and await align(ctx, rules, org, doc):
            aligned += 1
    await model.mark_opened(ctx.db, month, ctx.clock.now())
    return {"branches": len(branches), "created": len(created), "aligned": aligned}


@jobs.cron_job("compliance_months", "compliance_months", timeout=600)
async def open_running_month(ctx: AppContext) -> dict[str, int]:
    """Cron: open the clock's month (its first run in a month also closes the month before:
    from then on nothing rewrites that month's requirement)."""
    return await open_month(ctx, ctx.clock.month())


# -- repairs and moves ---------------------------------------------------------------

async def rebuild_rollups(ctx: AppContext, month: str) -> dict[ObjectId, int]:
    """Recompute a month's roll-ups from its compliance documents (after a subtree
    moved, or to repair a crash between a flip and its roll-up); compliant counts
    of every organisation above a branch document."""
    compliant: Counter = Counter()
    branches: Counter = Counter()
    for doc in await model.in_month(ctx.db, parse_month(month)):
        branches.update(doc["org_ancestors"][:-1])
        if doc.get("compliant"):
            compliant.update(doc["org_ancestors"][:-1])
    await model.replace_rollups(ctx.db, month, dict(compliant), dict(branches))
    return {o: compliant.get(o, 0) for o in branches}


async def subtree_moved(ctx: AppContext, org_ids: list[ObjectId], old_prefix: list[ObjectId],
                        new_prefix: list[ObjectId]) -> None:
    """A subtree moved: its branch-months leave the old ancestors' roll-ups and join the
    new ones' (the subtree's own nodes keep theirs): a ``subtree_moved`` hook."""
    compliant: Counter = Counter()
    documents: Counter = Counter()
    for org_id in org_ids:
        for doc in await model.of_org_months(ctx.db, org_id, "0000-00", "9999-99"):
            documents[doc["month"]] += 1
            compliant[doc["month"]] += 1 if doc.get("compliant") else 0
    for month, count in documents.items():
        moved = compliant[month]
        await model.bump_rollups(ctx.db, month, {o: (-moved, -count) for o in old_prefix})
        await model.bump_rollups(ctx.db, month, {o: (moved, count) for o in new_prefix})
