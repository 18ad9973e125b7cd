"""Collection ``notices``: 通知公告 an admin sends to an organisation subtree.

Shape::

    {_id, org_id, org_ancestors (the organisation it is addressed to),
     org_name, audience: members|secretaries, title, body, message_id,
     sender: {id, name}, created_at,
     state: fanout|sent,                           # fanout: recipients still being added
     fanout: {position, generation},               # where the fan-out job resumes
     counts: {recipients, delivered, inbox, failed, read}}

``counts`` are maintained as notifications move: ``delivered`` reached the
member's WeChat, ``inbox`` is only in the inbox (no WeChat channel),
``failed`` WeChat refused, ``read`` the recipients who opened it.

Example::

    await insert(db, doc)
    await add_counts(db, notice_id, {"recipients": 50, "inbox": 3})
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

import models

COLLECTION = "notices"
COUNTS = ("recipients", "delivered", "inbox", "failed", "read")

# Collections whose documents carry org_ancestors (rewritten when a subtree moves).
SCOPED = (COLLECTION,)
INDEXES: dict[str, list[IndexModel]] = {}
INDEXES[COLLECTION] = [
    IndexModel([("org_ancestors", ASCENDING), ("_id", DESCENDING)]),
    IndexModel([("org_id", ASCENDING)]),
    IndexModel([("state", ASCENDING), ("created_at", ASCENDING)]),
]


async def insert(db: AsyncDatabase, doc: dict[str, Any]) -> None:
    await db[COLLECTION].insert_one(doc)


async def get(db: AsyncDatabase, notice_id: ObjectId) -> dict[str, Any] | None:
    return await db[COLLECTION].find_one({"_id": notice_id})


async def by_ids(db: AsyncDatabase, ids: list[ObjectId]) -> dict[ObjectId, dict[str, Any]]:
    ids = list(set(ids))
    if not ids:
        return {}
    found = await db[COLLECTION].find({"_id": {"$in": ids}}).to_list()
    return {doc["_id"]: doc for doc in found}


async def page(db: AsyncDatabase, scope_id: ObjectId, before: ObjectId | None, after: ObjectId,
               limit: int) -> list[dict[str, Any]]:
    """Notices addressed inside a subtree, newest first, bounded below by ``after``."""
    id_range: dict[str, Any] = {"$gt": after}
    if before is not None:
        id_range["$lt"] = before
    cursor = (db[COLLECTION].find({"org_ancestors": scope_id, "_id": id_range}, {"body": 0})
              .sort("_id", DESCENDING).limit(limit))
    return await cursor.to_list()


async def add_counts(db: AsyncDatabase, notice_id: ObjectId, deltas: dict[str, int]) -> None:
    inc = {f"counts.{k}": v for k, v in deltas.items() if v}
    if inc:
        await db[COLLECTION].update_one({"_id": notice_id}, {"$inc": inc})


async def update_if(db: AsyncDatabase, notice_id: ObjectId, expected: dict[str, Any],
                    changes: dict[str, Any]) -> dict[str, Any] | None:
    return await models.update_if(db[COLLECTION], notice_id, expected, changes)


async def in_fanout(db: AsyncDatabase, created_before: datetime) -> list[dict[str, Any]]:
    """Notices still being fanned out that started before ``created_before``."""
    return await db[COLLECTION].find({"state": "fanout", "created_at": {"$lt": created_before}},
                                     {"_id": 1}).to_list()
