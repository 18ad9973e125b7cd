"""Collection ``meeting_comments``: members' reflections (心得体会) on a meeting.

Shape (docs/MEETINGS-DESIGN.md)::

    {_id: ObjectId (time-ordered), meeting_id, org_id, org_ancestors,
     member_id, name, text, at, hidden: bool, hidden_reason?, hidden_by?, hidden_at?}

A meeting's comments are read as keyset pages on ``(meeting_id, _id)``; hidden
ones are filtered in Python (a ``hidden`` term in the filter would not be a
key of that index, and SecantusDB would then scan the collection)::

    page = await after(db, meeting_id, None, 21)
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

import models

COLLECTION = "meeting_comments"

# Collections whose documents carry org_ancestors (rewritten when a subtree moves).
SCOPED = (COLLECTION,)
INDEXES: dict[str, list[IndexModel]] = {}
INDEXES[COLLECTION] = [
    IndexModel([("meeting_id", ASCENDING), ("_id", ASCENDING)]),
    IndexModel([("org_id", ASCENDING)]),  # moving a subtree rewrites org_ancestors by org_id
]


async def insert(db: AsyncDatabase, doc: dict[str, Any]) -> None:
    await db[COLLECTION].insert_one(doc)


async def get(db: AsyncDatabase, comment_id: ObjectId) -> dict[str, Any] | None:
    return await db[COLLECTION].find_one({"_id": comment_id})


async def after(db: AsyncDatabase, meeting_id: ObjectId, after_id: ObjectId | None,
                limit: int) -> list[dict[str, Any]]:
    """Oldest first, strictly after ``after_id``."""
    query: dict[str, Any] = {"meeting_id": meeting_id}
    if after_id is not None:
        query["_id"] = {"$gt": after_id}
    cursor = db[COLLECTION].find(query).sort("_id", ASCENDING).limit(limit)
    return await cursor.to_list()


async def update_if(db: AsyncDatabase, comment_id: ObjectId, expected: dict[str, Any],
                    changes: dict[str, Any]) -> dict[str, Any] | None:
    return await models.update_if(db[COLLECTION], comment_id, expected, changes)
