"""Collections ``compliance`` and ``compliance_rollup``: 三会一课 per branch per month.

One ``compliance`` document per branch per month, written only by
:mod:`wxbackend.services.meetings.compliance` when a meeting finishes (or stops being
finished) and by the seed's bulk load::

    {_id: "<org_id>:<YYYY-MM>", org_id, org_ancestors, month, quarter: "YYYY-Qn",
     counts: {<type>: n},                       # counted meetings of this month by type
     meetings: {"<meeting_id>": [type, expected, attended, excused]},  # what each added
     expected_sum, attended_sum, excused_sum,
     quarter_counts, quarter_meetings,          # quarter's last month only: the whole quarter
     year_counts, year_meetings,                # December only: the whole year
     required: {monthly: [..], quarterly: [..], yearly: [..]},
     rev, compliant}

``meetings`` (and ``quarter_meetings``/``year_meetings``: ``{"<id>": type}``)
record which meetings a document has counted, so counting is a conditional
update on "not counted yet": idempotent under retries and races. ``rev`` moves
with every change of counts, and ``compliant`` is only ever rewritten on the
``rev`` it was judged from.

``compliance_rollup`` keeps, per organisation above the branches and month,
how many branches of its subtree are compliant::

    {_id: "<org_id>:<YYYY-MM>", org_id, month, compliant}

Non-compliant = branches in the subtree (tree snapshot) - compliant, so a
branch without any meeting (and so without a document) counts as non-compliant
and no committee page ever reads a subtree. Example::

    doc = await get(db, branch_id, "2026-03")
    rollups = await rollups_of(db, [district_id], "2026-03")
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

COLLECTION = "compliance"
ROLLUPS = "compliance_rollup"

# Collections whose documents carry org_ancestors (rewritten when a subtree moves).
SCOPED = (COLLECTION,)
INDEXES: dict[str, list[IndexModel]] = {}
INDEXES[COLLECTION] = [
    IndexModel([("org_id", ASCENDING), ("month", ASCENDING)]),
    # Rebuilding a month's roll-ups reads that month's documents.
    IndexModel([("month", ASCENDING), ("compliant", ASCENDING)]),
]
INDEXES[ROLLUPS] = [IndexModel([("month", ASCENDING)])]


def doc_id(org_id: ObjectId, month: str) -> str:
    return f"{org_id}:{month}"


async def get(db: AsyncDatabase, org_id: ObjectId, month: str) -> dict[str, Any] | None:
    return await db[COLLECTION].find_one({"_id": doc_id(org_id, month)})


async def get_many(db: AsyncDatabase, org_ids: Iterable[ObjectId],
                   months: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Documents by ``_id`` for every (organisation, month) pair: point lookups."""
    ids = [doc_id(o, m) for o in org_ids for m in months]
    if not ids:
        return {}
    fields = {"meetings": 0, "quarter_meetings": 0, "year_meetings": 0}
    return {d["_id"]: d async for d in db[COLLECTION].find({"_id": {"$in": ids}}, fields)}


def new_doc(org: dict[str, Any], month: str, quarter: str, required: dict[str, list[str]]) -> dict[str, Any]:
    """An empty (non-compliant) document: what counting starts from."""
    return {"_id": doc_id(org["_id"], month), "org_id": org["_id"],
            "org_ancestors": list(org["org_ancestors"]), "month": month, "quarter": quarter,
            "required": required, "counts": {}, "meetings": {}, "expected_sum": 0,
            "attended_sum": 0, "excused_sum": 0, "rev": 0, "compliant": False}


async def ensure(db: AsyncDatabase, org: dict[str, Any], month: str, quarter: str,
                 required: dict[str, list[str]]) -> None:
    """Create the (empty, non-compliant) document unless it exists."""
    base = new_doc(org, month, quarter, required)
    key = base.pop("_id")
    # A racing call may create it first (duplicate key): that is all we wanted.
    with contextlib.suppress(DuplicateKeyError):
        await db[COLLECTION].update_one({"_id": key}, {"$setOnInsert": base}, upsert=True)


async def apply_once(db: AsyncDatabase, key: str, marker: str, present: bool,
                     changes: dict[str, Any]) -> bool:
    """Apply ``changes`` if the marker field (e.g. ``meetings.<id>``) is absent
    (``present=False``) or present (``present=True``); True when applied."""
    result = await db[COLLECTION].update_one({"_id": key, marker: {"$exists": present}}, changes)
    return result.matched_count == 1


async def get_by_key(db: AsyncDatabase, key: str) -> dict[str, Any] | None:
    return await db[COLLECTION].find_one({"_id": key})


async def set_compliant(db: AsyncDatabase, key: str, rev: int, was: bool, now: bool) -> bool:
    """Flip ``compliant`` only on the revision it was judged from."""
    result = await db[COLLECTION].update_one({"_id": key, "rev": rev, "compliant": was},
                                             {"$set": {"compliant": now}})
    return result.matched_count == 1


async def in_month(db: AsyncDatabase, month: str) -> list[dict[str, Any]]:
    """Compliant documents of one month (roll-up rebuilds; ~12,000 at full scale)."""
    cursor = db[COLLECTION].find({"month": month, "compliant": True}, {"org_ancestors": 1})
    return await cursor.to_list()


async def of_org_months(db: AsyncDatabase, org_id: ObjectId, first: str,
                        last: str) -> list[dict[str, Any]]:
    """A branch's documents for months in [first, last], by month."""
    cursor = (db[COLLECTION].find({"org_id": org_id, "month": {"$gte": first, "$lte": last}},
                                  {"meetings": 0, "quarter_meetings": 0, "year_meetings": 0})
              .sort("month", ASCENDING))
    return await cursor.to_list()


# -- roll-ups ------------------------------------------------------------------------

def rollup_id(org_id: ObjectId, month: str) -> str:
    return f"{org_id}:{month}"


async def adjust_rollups(db: AsyncDatabase, org_ids: Iterable[ObjectId], month: str,
                         delta: int) -> None:
    """``compliant += delta`` for each organisation's month (created when missing)."""
    ops = [UpdateOne({"_id": rollup_id(o, month)},
                     {"$inc": {"compliant": delta}, "$setOnInsert": {"org_id": o, "month": month}},
                     upsert=True) for o in org_ids]
    if not ops:
        return
    try:
        await db[ROLLUPS].bulk_write(ops, ordered=False)
    except Exception as exc:  # BulkWriteError: a racing upsert created some documents
        if not _only_duplicates(exc):
            raise
        failed = {e["index"] for e in exc.details["writeErrors"]}  # type: ignore[attr-defined]
        # The documents exist now, so these updates no longer need to insert.
        await db[ROLLUPS].bulk_write([op for i, op in enumerate(ops) if i in failed], ordered=False)


def _only_duplicates(exc: Exception) -> bool:
    details = getattr(exc, "details", None) or {}
    errors = details.get("writeErrors") or []
    return bool(errors) and all(e.get("code") == 11000 for e in errors)


async def rollups_of(db: AsyncDatabase, org_ids: Iterable[ObjectId],
                     month: str) -> dict[ObjectId, int]:
    ids = [rollup_id(o, month) for o in org_ids]
    if not ids:
        return {}
    found = db[ROLLUPS].find({"_id": {"$in": ids}}, {"org_id": 1, "compliant": 1})
    return {d["org_id"]: d["compliant"] async for d in found}


async def replace_rollups(db: AsyncDatabase, month: str, counts: dict[ObjectId, int]) -> None:
    """Write a month's roll-ups from scratch (rebuild after a subtree moved)."""
    await db[ROLLUPS].delete_many({"month": month})
    docs = [{"_id": rollup_id(o, month), "org_id": o, "month": month, "compliant": n}
            for o, n in counts.items()]
    if docs:
        await db[ROLLUPS].insert_many(docs, ordered=False)


async def insert_many(db: AsyncDatabase, docs: list[dict[str, Any]], *, rollups: bool = False) -> None:
    """Bulk load (seed): documents already computed in Python."""
    if docs:
        await db[ROLLUPS if rollups else COLLECTION].insert_many(docs, ordered=False)
