"""Collection ``notify_batches``: the durable record of each delivery job.

A delivery job carries a batch of outbox ids in Redis; this document holds the
same ids in MongoDB until the job has dealt with all of them, so a job that
Redis lost (a restart without its last writes, an expired or failed job) is
found and queued again by the recovery job. Shape::

    {_id: the arq job id, ids: [outbox id], due_at, created_at, recoveries,
     plan: {msg, subject, notice_id, members: [member id], users: [user id]}}

A batch with a ``plan`` (a big fan-out) names recipients whose outbox
documents do not exist yet: the delivering worker writes them with the ids
chosen in advance (``ids``, in the order of members then users), then drops
the plan.

Example::

    await insert_many(db, [{"_id": "deliver:65f..:50", "ids": [...], "due_at": now, ...}])
    await delete(db, "deliver:65f..:50")      # the job is done with its ids
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

COLLECTION = "notify_batches"

INDEXES: dict[str, list[IndexModel]] = {}
INDEXES[COLLECTION] = [IndexModel([("due_at", ASCENDING)])]


async def insert_many(db: AsyncDatabase, docs: list[dict[str, Any]]) -> None:
    """Insert; a batch already recorded (same job id) is left as it is."""
    if not docs:
        return
    try:
        await db[COLLECTION].insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
            raise


async def get(db: AsyncDatabase, job_id: str) -> dict[str, Any] | None:
    return await db[COLLECTION].find_one({"_id": job_id})


async def clear_plan(db: AsyncDatabase, job_id: str) -> None:
    await db[COLLECTION].update_one({"_id": job_id}, {"$unset": {"plan": ""}})


async def delete(db: AsyncDatabase, job_id: str) -> None:
    await db[COLLECTION].delete_one({"_id": job_id})


async def due(db: AsyncDatabase, before: datetime, limit: int) -> list[dict[str, Any]]:
    """Batches that should have run by ``before`` (their jobs may be lost)."""
    return await db[COLLECTION].find({"due_at": {"$lt": before}}).limit(limit).to_list()


async def count_recovery(db: AsyncDatabase, job_id: str) -> None:
    await db[COLLECTION].update_one({"_id": job_id}, {"$inc": {"recoveries": 1}})
