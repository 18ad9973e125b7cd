"""Collections ``compliance``, ``compliance_rollup``, ``compliance_month``: 三会一课 per
branch per month.

One ``compliance`` document per branch per month, written only by
:mod:`wxbackend.services.meetings.compliance` when a meeting finishes (or stops being
finished), by :mod:`wxbackend.services.meetings.compliance_months` when a month opens
(every active branch gets its document) and by the seed's bulk load::

    {_id: "<org_id>:<YYYY-MM>", org_id, org_ancestors, month, quarter: "YYYY-Qn",
     counts: {<type>: n},                       # counted meetings of this month by type
     meetings: {"<meeting_id>": [type, expected, attended, excused]},  # what each added
     expected_sum, attended_sum, excused_sum,
     quarter_counts, quarter_meetings,          # quarter's last month only: the whole quarter
     year_counts, year_meetings,                # December only: the whole year
     basis: {full_members, groups},             # the branch as it was in this month
     required: {monthly: [..], quarterly: [..], yearly: [..]},   # what basis made it owe
     rev, compliant}

``basis`` and ``required`` are written when the document is created and kept in
line with the branch only while its month is the running one; once the month has
ended nothing rewrites them, so membership changed today never moves a past
month's verdict.

``meetings`` (and ``quarter_meetings``/``year_meetings``: ``{"<id>": type}``)
record which meetings a document has counted, so counting is a conditional
update on "not counted yet": idempotent under retries and races. ``rev`` moves
with every change of counts, and ``compliant`` is only ever rewritten on the
``rev`` it was judged from.

``compliance_rollup`` keeps, per organisation above the branches and month,
how many branches of its subtree are compliant, and how many branch documents
that month has (the branches the month was judged on)::

    {_id: "<org_id>:<YYYY-MM>", org_id, month, compliant, branches}

``compliance_month`` marks the months whose documents were opened for every
active branch (``{_id: "YYYY-MM", opened_at}``): for such a month that has ended,
``branches`` is the frozen denominator; otherwise (the running month, or months
from before opening existed) it is the branches in the subtree (tree snapshot),
and a branch without a document counts as non-compliant. No committee page ever
reads a subtree. Example::

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
MONTHS = "compliance_month"

# Collections whose documents carry org_ancestors (rewritten when a subtree moves).
SCOPED = (COLLECTION,)
INDEXES: dict[str, list[IndexModel]] = {}
INDEXES[COLLECTION] = [
    IndexModel([("org_id", ASCENDING), ("month", ASCENDING)]),
    # Rebuilding a month's roll-ups reads that month's documents.
    IndexModel([("month", ASCENDING), ("compliant", ASCENDING)]),
]
INDEXES[ROLLUPS] = [IndexModel([("month", ASCENDING)])]
INDEXES[MONTHS] = []  # read by _id only


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


def new_doc(org: dict[str, Any], month: str, quarter: str, required: dict[str, list[str]],
            basis: dict[str, int]) -> dict[str, Any]:
    """An empty (non-compliant) document: what counting starts from."""
    return {"_id": doc_id(org["_id"], month), "org_id": org["_id"],
            "org_ancestors": list(org["org_ancestors"]), "month": month, "quarter": quarter,
            "basis": basis, "required": required, "counts": {}, "meetings": {}, "expected_sum": 0,
            "attended_sum": 0, "excused_sum": 0, "rev": 0, "compliant": False}


async def ensure(db: AsyncDatabase, org: dict[str, Any], month: str, quarter: str,
                 required: dict[str, list[str]], basis: dict[str, int]) -> bool:
    """Create the (empty, non-compliant) document unless it exists; True when this call did."""
    base = new_doc(org, month, quarter, required, basis)
    key = base.pop("_id")
    # A racing call may create it first (duplicate key): that is all we wanted.
    with contextlib.suppress(DuplicateKeyError):
        result = await db[COLLECTION].update_one({"_id": key}, {"$setOnInsert": base}, upsert=True)
        return result.upserted_id is not None
    return False


async def insert_new(db: AsyncDatabase, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Insert those of ``docs`` that do not exist yet; the ones this call inserted."""
    if not docs:
        return []
    try:
        await db[COLLECTION].insert_many(docs, ordered=False)
    except Exception as exc:  # BulkWriteError: some existed (or a racing call made them)
        if not _only_duplicates(exc):
            raise
        failed = {e["index"] for e in exc.details["writeErrors"]}  # type: ignore[attr-defined]
        return [d for i, d in enumerate(docs) if i not in failed]
    return docs


async def set_requirement(db: AsyncDatabase, key: str, rev: int, required: dict[str, list[str]],
                          basis: dict[str, int]) -> bool:
    """Rewrite a document's requirement on the revision it was read at (moves ``rev``)."""
    result = await db[COLLECTION].update_one(
        {"_id": key, "rev": rev}, {"$set": {"required": required, "basis": basis}, "$inc": {"rev": 1}})
    return result.matched_count == 1


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


async def in_month(db: AsyncDatabase, month: str, fields: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Every document of one month (roll-up rebuilds, opening a month; ~12,000 at full scale)."""
    projection = fields or {"org_ancestors": 1, "compliant": 1}
    return await db[COLLECTION].find({"month": month}, projection).to_list()


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
                         delta: int = 0, *, branches: int = 0) -> None:
    """``compliant += delta`` (and ``branches += branches``) for each organisation's month."""
    await bump_rollups(db, month, {o: (delta, branches) for o in org_ids})


async def bump_rollups(db: AsyncDatabase, month: str, deltas: dict[ObjectId, tuple[int, int]]) -> None:
    """Per organisation ``(compliant, branches)`` increments of one month (created when missing)."""
    ops = [UpdateOne({"_id": rollup_id(o, month)},
                     {"$inc": {"compliant": c, "branches": b}, "$setOnInsert": {"org_id": o, "month": month}},
                     upsert=True) for o, (c, b) in deltas.items() if c or b]
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


async def rollup_docs(db: AsyncDatabase, pairs: Iterable[tuple[ObjectId, str]]) -> dict[str, dict[str, Any]]:
    """Roll-ups by ``_id`` for (organisation, month) pairs: point lookups."""
    ids = [rollup_id(o, m) for o, m in pairs]
    if not ids:
        return {}
    return {d["_id"]: d async for d in db[ROLLUPS].find({"_id": {"$in": ids}})}


async def replace_rollups(db: AsyncDatabase, month: str, counts: dict[ObjectId, int],
                          branches: dict[ObjectId, int] | None = None) -> None:
    """Write a month's roll-ups from scratch (rebuild after a subtree moved)."""
    await db[ROLLUPS].delete_many({"month": month})
    branches = branches or {}
    docs = [{"_id": rollup_id(o, month), "org_id": o, "month": month, "compliant": counts.get(o, 0),
             "branches": branches.get(o, 0)} for o in {*counts, *branches}]
    if docs:
        await db[ROLLUPS].insert_many(docs, ordered=False)


# -- opened months -------------------------------------------------------------------

async def mark_opened(db: AsyncDatabase, month: str, at: Any) -> None:
    """Record that every active branch has its document for ``month`` (first opening wins)."""
    await db[MONTHS].update_one({"_id": month}, {"$setOnInsert": {"opened_at": at}}, upsert=True)


async def opened(db: AsyncDatabase, months: Iterable[str]) -> set[str]:
    wanted = list(months)
    if not wanted:
        return set()
    return {d["_id"] async for d in db[MONTHS].find({"_id": {"$in": wanted}}, {"_id": 1})}


async def insert_many(db: AsyncDatabase, docs: list[dict[str, Any]], *, rollups: bool = False) -> None:
    """Bulk load (seed): documents already computed in Python."""
    if docs:
        await db[ROLLUPS if rollups else COLLECTION].insert_many(docs, ordered=False)
