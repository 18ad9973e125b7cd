"""Collection ``notify_messages``: the rendered text of one ``notify`` call.

Every recipient of a call gets the same words, so they are stored once and
the outbox documents (``notifications``) point here with ``msg``. Shape::

    {_id, kind, subject, title, summary, data: {name: str},
     oa: {template_id, data: {key: {"value": str}}} | None,     # template message
     mp: {template_id, data: {key: {"value": str}}} | None,     # subscribe message
     link: "/admin/..." (management web), page: "pages/..." (mini-program),
     created_at}

Example::

    await insert(db, doc)
    by_id = await by_ids(db, [doc["_id"]])
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

COLLECTION = "notify_messages"

INDEXES: dict[str, list[IndexModel]] = {}
INDEXES[COLLECTION] = [IndexModel([("created_at", ASCENDING)])]


async def insert(db: AsyncDatabase, doc: dict[str, Any]) -> None:
    await db[COLLECTION].insert_one(doc)


async def by_ids(db: AsyncDatabase, ids: list[ObjectId]) -> dict[ObjectId, dict[str, Any]]:
    ids = list(set(ids))
    if not ids:
        return {}
    found = await db[COLLECTION].find({"_id": {"$in": ids}}).to_list()
    return {doc["_id"]: doc for doc in found}


async def delete_before(db: AsyncDatabase, before: datetime) -> int:
    result = await db[COLLECTION].delete_many({"created_at": {"$lt": before}})
    return result.deleted_count
