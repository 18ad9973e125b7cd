"""Collection ``notifications``: the outbox and, at the same time, everybody's inbox.

One document per recipient and notification. Shape::

    {_id, owner, owner_type: member|user, kind, subject,   # (owner, kind, subject) is unique
     msg: message id (notify_messages: the rendered text, shared by all recipients),
     org_id, org_ancestors (the recipient's), channel: oa|mp|web|inbox, openid (oa/mp),
     notice_id (notices only),
     status: queued|sent|failed|undeliverable, attempts, errcode, errmsg, msgid,
     next_at,   # queued: when due; otherwise when it ended
     scope,     # = org_ancestors, only while failed or undeliverable (see below)
     sent_at, read_at, digest: pending|done (admin users' kinds that wait for the digest)}

While a worker sends a notification it holds a claim in Redis
(``wxbackend.services.notify.notify_delivery``), not a state here: SecantusDB
rewrites every index entry of a document on any update, so each write to
these documents is paid per index entry, and a notification is written twice
in its life (inserted, settled).

Hence few index entries per document:

- ``(owner, kind, subject)`` unique: the idempotency key, and an inbox
  (``{"owner": id}``; an owner's notifications of the retention period are few
  enough to sort in Python);
- ``(status, next_at)``: recovery, pruning, and the outbox's time-ordered pages;
- ``(scope, status, _id)`` *sparse*: the outbox page of a subtree for what
  admins act on. Only failed and undeliverable documents carry ``scope``, so
  the bulk (queued, sent) pays nothing for it. Moving an organisation
  rewrites ``org_ancestors`` (as in every scoped collection) but not
  ``scope``: pages check ``org_ancestors``, so a moved branch's old failures
  leave the old committee's page (and do not join the new one's);
- ``org_id``: what moving an organisation needs.

Example::

    skipped = await insert_many(db, docs)          # duplicates (same key) are skipped
    await settle(db, [(doc_id, {"status": "sent", ...})])
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

import models

COLLECTION = "notifications"
STATUSES = ("queued", "sent", "failed", "undeliverable")
FINAL = ("sent", "failed", "undeliverable")
SCOPED = ("failed", "undeliverable")

# Collections whose documents carry org_ancestors (rewritten when a subtree moves).
SCOPED = (COLLECTION,)
INDEXES: dict[str, list[IndexModel]] = {}
INDEXES[COLLECTION] = [
    IndexModel([("owner", ASCENDING), ("kind", ASCENDING), ("subject", ASCENDING)], unique=True),
    IndexModel([("status", ASCENDING), ("next_at", ASCENDING)]),
    IndexModel([("scope", ASCENDING), ("status", ASCENDING), ("_id", DESCENDING)], sparse=True),
    # Moving an organisation rewrites its documents' org_ancestors ({"org_id": ...}).
    IndexModel([("org_id", ASCENDING)]),
]

# What a delivery needs of a notification (not the inbox fields).
DELIVERY_FIELDS = {"msg": 1, "kind": 1, "channel": 1, "openid": 1, "status": 1, "attempts": 1,
                   "owner_type": 1, "owner": 1, "org_ancestors": 1, "day": 1, "notice_id": 1}


async def insert_many(db: AsyncDatabase, docs: list[dict[str, Any]]) -> set[int]:
    """Insert, skipping documents whose key (or _id) exists; returns the indexes skipped."""
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


async def settle(db: AsyncDatabase, outcomes: list[tuple[ObjectId, dict[str, Any]]]) -> int:
    """queued -> the outcome (sent, failed, undeliverable, or queued again for later).

    Conditional on ``queued``: the caller holds the notifications' claims, so
    nobody else moved them; a document already ended is left alone.
    """
    if not outcomes:
        return 0
    ops = []
    for doc_id, changes in outcomes:
        update: dict[str, Any] = {"$set": changes, "$inc": {"attempts": 1}}
        ops.append(UpdateOne({"_id": doc_id, "status": "queued"}, update))
    result = await db[COLLECTION].bulk_write(ops, ordered=False)
    return result.modified_count


async def update_if(db: AsyncDatabase, doc_id: ObjectId, expected: dict[str, Any],
                    changes: dict[str, Any]) -> dict[str, Any] | None:
    return await models.update_if(db[COLLECTION], doc_id, expected, changes)


async def defer_queued(db: AsyncDatabase, ids: list[ObjectId], next_at: datetime) -> None:
    """Queued notifications wait (a paused API) until ``next_at``."""
    await update_each(db, ids, {"status": "queued"}, {"$set": {"next_at": next_at}})


async def delete_ended(db: AsyncDatabase, status: str, before: datetime) -> int:
    result = await db[COLLECTION].delete_many({"status": status, "next_at": {"$lt": before}})
    return result.deleted_count


# -- inbox and outbox pages -----------------------------------------------------------

async def of_owner(db: AsyncDatabase, owner: ObjectId) -> list[dict[str, Any]]:
    """All of an owner's notifications (the retention period's: a few hundred at most)."""
    return await db[COLLECTION].find({"owner": owner}).to_list()


async def mark_read(db: AsyncDatabase, doc_id: ObjectId, owner: ObjectId, at: datetime) -> bool:
    result = await db[COLLECTION].update_one({"_id": doc_id, "owner": owner, "read_at": None},
                                             {"$set": {"read_at": at}})
    return result.modified_count == 1


async def scoped_window(db: AsyncDatabase, scope_id: ObjectId, status: str, low: ObjectId,
                        high: ObjectId, limit: int) -> list[dict[str, Any]]:
    """Failed or undeliverable notifications of a subtree between two ids (times), newest first."""
    assert status in SCOPED
    cursor = (db[COLLECTION].find({"scope": scope_id, "status": status,
                                   "_id": {"$gte": low, "$lt": high}})
              .sort("_id", DESCENDING).limit(limit))
    return await cursor.to_list()


async def timed_window(db: AsyncDatabase, status: str, low: datetime, high: datetime,
                       limit: int) -> list[dict[str, Any]]:
    """Notifications of one status by ``next_at`` in ``[low, high)``, latest first (all
    organisations: the caller keeps those of its subtree)."""
    cursor = (db[COLLECTION].find({"status": status, "next_at": {"$gte": low, "$lt": high}})
              .sort("next_at", DESCENDING).limit(limit))
    return await cursor.to_list()


async def due(db: AsyncDatabase, status: str, before: datetime, limit: int,
              fields: dict[str, int] | None = None) -> list[dict[str, Any]]:
    cursor = db[COLLECTION].find({"status": status, "next_at": {"$lt": before}},
                                 fields or {"next_at": 1})
    return await cursor.limit(limit).to_list()


async def mark_digested(db: AsyncDatabase, ids: list[ObjectId]) -> None:
    await update_each(db, ids, {"digest": "pending"}, {"$set": {"digest": "done"}})
