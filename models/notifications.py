"""Collection ``notifications``: the outbox and, at the same time, everybody's inbox.

One document per recipient and notification. Shape::

    {_id, key: "<m|u><owner id>|<kind>|<subject>" (unique: the idempotency key),
     msg: message id (notify_messages: the rendered text, shared by all recipients),
     kind, owner, owner_type: member|user, org_id, org_ancestors (the recipient's),
     channel: oa|mp|web|inbox, openid (oa/mp), notice_id (notices only),
     status: queued|sending|sent|failed|undeliverable, attempts, errcode, errmsg,
     next_at,   # queued: when due; sending: when the claim expires; final: when it ended
     claim,     # the claiming worker's token while sending
     day: "YYYY-MM-DD" (Asia/Shanghai, of creation), created_at, sent_at, msgid,
     read_at, digest: pending|done (admin users' kinds that wait for the digest)}

Indexes, each for one query shape (SecantusDB uses an index only when every
filter field is a key of it, and reads every document a query matches):
``key`` (dedup), ``(status, next_at)`` (recovery and pruning), ``(owner, _id)``
(an inbox page) and ``(org_ancestors, status, _id)`` (the outbox page of a
subtree, one status at a time, within a time window). Few indexes on purpose:
each one slows the fan-out's ``insert_many``.

Example::

    await insert_many(db, docs)                        # duplicates are skipped
    claimed = await claim(db, ids, token, lease_until)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

import models
from models import register

COLLECTION = "notifications"
STATUSES = ("queued", "sending", "sent", "failed", "undeliverable")
FINAL = ("sent", "failed", "undeliverable")

register(COLLECTION, [
    IndexModel([("key", ASCENDING)], unique=True),
    IndexModel([("status", ASCENDING), ("next_at", ASCENDING)]),
    IndexModel([("owner", ASCENDING), ("_id", DESCENDING)]),
    IndexModel([("org_ancestors", ASCENDING), ("status", ASCENDING), ("_id", DESCENDING)]),
], scoped=True)

# What a delivery needs of a notification (not the inbox fields).
DELIVERY_FIELDS = {"msg": 1, "kind": 1, "channel": 1, "openid": 1, "status": 1, "attempts": 1, "owner_type": 1,
                   "owner": 1, "org_ancestors": 1, "day": 1, "notice_id": 1}


async def insert_many(db: AsyncDatabase, docs: list[dict[str, Any]]) -> set[int]:
    """Insert, skipping documents whose key exists; returns the indexes skipped."""
    if not docs:
        return set()
    try:
        await db[COLLECTION].insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != 11000 for e in errors):
            raise
        return {e["index"] for e in errors}
    return set()


async def by_keys(db: AsyncDatabase, keys: list[str]) -> list[dict[str, Any]]:
    return await db[COLLECTION].find({"key": {"$in": keys}}, {"key": 1, "status": 1}).to_list()


async def get(db: AsyncDatabase, doc_id: ObjectId) -> dict[str, Any] | None:
    return await db[COLLECTION].find_one({"_id": doc_id})


async def by_ids(db: AsyncDatabase, ids: list[ObjectId],
                 fields: dict[str, int] | None = None) -> list[dict[str, Any]]:
    if not ids:
        return []
    return await db[COLLECTION].find({"_id": {"$in": ids}}, fields).to_list()


async def update_each(db: AsyncDatabase, ids: list[ObjectId], expected: dict[str, Any],
                      changes: dict[str, Any]) -> int:
    """The same conditional update of several documents; returns how many changed.

    One ``bulk_write`` of ``_id``-equality updates: SecantusDB runs each as a
    point lookup, where ``{"_id": {"$in": ...}, "status": ...}`` is planned
    as a collection scan.
    """
    if not ids:
        return 0
    result = await db[COLLECTION].bulk_write(
        [UpdateOne({"_id": doc_id, **expected}, changes) for doc_id in ids], ordered=False)
    return result.modified_count


# -- state machine ------------------------------------------------------------------------

async def claim(db: AsyncDatabase, ids: list[ObjectId], token: str,
                lease_until: datetime) -> list[ObjectId]:
    """queued -> sending for those still queued; returns the ids this token claimed.

    A conditional update per notification (the expected state in the
    filter, as ``models.update_if`` does), sent as one command: two workers
    cannot both claim a notification.
    """
    modified = await update_each(db, ids, {"status": "queued"}, {
        "$set": {"status": "sending", "claim": token, "next_at": lease_until},
        "$inc": {"attempts": 1}})
    if modified == len(ids):
        return list(ids)
    mine = await db[COLLECTION].find({"_id": {"$in": ids}}, {"claim": 1, "status": 1}).to_list()
    return [d["_id"] for d in mine if d.get("status") == "sending" and d.get("claim") == token]


async def settle(db: AsyncDatabase, token: str, outcomes: list[tuple[ObjectId, dict[str, Any]]]) -> int:
    """sending -> the outcome's status, only while our claim holds; returns how many moved."""
    if not outcomes:
        return 0
    ops = [UpdateOne({"_id": doc_id, "status": "sending", "claim": token},
                     {"$set": changes, "$unset": {"claim": ""}})
           for doc_id, changes in outcomes]
    result = await db[COLLECTION].bulk_write(ops, ordered=False)
    return result.modified_count


async def update_if(db: AsyncDatabase, doc_id: ObjectId, expected: dict[str, Any],
                    changes: dict[str, Any]) -> dict[str, Any] | None:
    return await models.update_if(db[COLLECTION], doc_id, expected, changes)


async def defer_queued(db: AsyncDatabase, ids: list[ObjectId], next_at: datetime) -> None:
    """Queued notifications wait (a paused API) until ``next_at``."""
    await update_each(db, ids, {"status": "queued"}, {"$set": {"next_at": next_at}})


async def due(db: AsyncDatabase, status: str, before: datetime, limit: int,
              fields: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Notifications in ``status`` whose ``next_at`` passed (recovery)."""
    cursor = db[COLLECTION].find({"status": status, "next_at": {"$lt": before}},
                                 fields or {"claim": 1, "next_at": 1, "attempts": 1})
    return await cursor.limit(limit).to_list()


async def delete_ended(db: AsyncDatabase, status: str, before: datetime) -> int:
    result = await db[COLLECTION].delete_many({"status": status, "next_at": {"$lt": before}})
    return result.deleted_count


# -- inbox and outbox pages -----------------------------------------------------------

async def inbox(db: AsyncDatabase, owner: ObjectId, before: ObjectId | None,
                after: ObjectId, limit: int) -> list[dict[str, Any]]:
    """An owner's notifications, newest first, between ``after`` and ``before`` (ids)."""
    id_range: dict[str, Any] = {"$gt": after}
    if before is not None:
        id_range["$lt"] = before
    cursor = (db[COLLECTION].find({"owner": owner, "_id": id_range})
              .sort("_id", DESCENDING).limit(limit))
    return await cursor.to_list()


async def mark_read(db: AsyncDatabase, doc_id: ObjectId, owner: ObjectId, at: datetime) -> bool:
    result = await db[COLLECTION].update_one({"_id": doc_id, "owner": owner, "read_at": None},
                                             {"$set": {"read_at": at}})
    return result.modified_count == 1


async def window(db: AsyncDatabase, scope_id: ObjectId, status: str, low: ObjectId,
                 high: ObjectId, limit: int) -> list[dict[str, Any]]:
    """One status of a subtree between two ids (times), newest first."""
    cursor = (db[COLLECTION].find({"org_ancestors": scope_id, "status": status,
                                   "_id": {"$gte": low, "$lt": high}})
              .sort("_id", DESCENDING).limit(limit))
    return await cursor.to_list()


async def mark_digested(db: AsyncDatabase, ids: list[ObjectId]) -> None:
    await update_each(db, ids, {"digest": "pending"}, {"$set": {"digest": "done"}})
