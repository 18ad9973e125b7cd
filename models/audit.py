"""Collection ``audit_log``: who changed or viewed what, when and from where.

Shape::

    {_id: ObjectId (time-ordered), at, actor: {id, name}, ip, action,
     target: {type, id, label}, org_id, org_ancestors, details: {...}}

Details never hold personal data in clear: a change to an ID-card number is
logged as "changed", not with the number.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

COLLECTION = "audit_log"

# Collections whose documents carry org_ancestors (rewritten when a subtree moves).
SCOPED = (COLLECTION,)
INDEXES: dict[str, list[IndexModel]] = {}
INDEXES[COLLECTION] = [
    IndexModel([("org_ancestors", ASCENDING), ("_id", DESCENDING)]),
    IndexModel([("target.id", ASCENDING), ("_id", DESCENDING)]),
    IndexModel([("org_id", ASCENDING)]),
]


async def insert(db: AsyncDatabase, doc: dict[str, Any]) -> None:
    await db[COLLECTION].insert_one(doc)


async def page(db: AsyncDatabase, scope_id: ObjectId, before: ObjectId | None,
               after_time: ObjectId, limit: int) -> list[dict[str, Any]]:
    """Newest first, bounded below by ``after_time`` so the range stays tight."""
    id_range: dict[str, Any] = {"$gt": after_time}
    if before is not None:
        id_range["$lt"] = before
    cursor = (db[COLLECTION].find({"org_ancestors": scope_id, "_id": id_range})
              .sort("_id", DESCENDING).limit(limit))
    return await cursor.to_list()


async def for_target(db: AsyncDatabase, target_id: ObjectId, limit: int = 50) -> list[dict[str, Any]]:
    cursor = db[COLLECTION].find({"target.id": target_id}).sort("_id", DESCENDING).limit(limit)
    return await cursor.to_list()
