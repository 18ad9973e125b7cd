"""Collection ``notify_stats``: notifications per day and organisation, by outcome.

Maintained counters (never counted at request time): one document per day
(Asia/Shanghai) and organisation for every organisation on the recipients'
paths, so the outbox page of any subtree reads one document a day. Shape::

    {_id: "YYYY-MM-DD|<org id>", day, org_id,
     total, sent, failed, undeliverable}     # queued or sending = total - the others

Example::

    await add(db, {("2025-03-01", org_id): {"total": 5, "undeliverable": 1}})
    rows = await for_org(db, org_id, ["2025-03-01", "2025-02-28"])
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

COLLECTION = "notify_stats"
FIELDS = ("total", "sent", "failed", "undeliverable")

INDEXES: dict[str, list[IndexModel]] = {}
INDEXES[COLLECTION] = [IndexModel([("day", ASCENDING)])]  # pages read by _id; pruning by day


def stat_id(day: str, org_id: ObjectId) -> str:
    return f"{day}|{org_id}"


async def add(db: AsyncDatabase, deltas: dict[tuple[str, ObjectId], dict[str, int]]) -> None:
    """Apply counter changes, creating the day's documents as needed."""
    ops = []
    for (day, org_id), fields in deltas.items():
        inc = {k: v for k, v in fields.items() if v}
        if inc:
            ops.append(UpdateOne({"_id": stat_id(day, org_id)},
                                 {"$inc": inc, "$setOnInsert": {"day": day, "org_id": org_id}},
                                 upsert=True))
    if ops:
        await db[COLLECTION].bulk_write(ops, ordered=False)


async def for_org(db: AsyncDatabase, org_id: ObjectId, days: list[str]) -> dict[str, dict[str, Any]]:
    found = await db[COLLECTION].find({"_id": {"$in": [stat_id(d, org_id) for d in days]}}).to_list()
    return {doc["day"]: doc for doc in found}


async def delete_before(db: AsyncDatabase, day: str) -> int:
    result = await db[COLLECTION].delete_many({"day": {"$lt": day}})
    return result.deleted_count
