"""Collection ``notify_grants``: mini-program subscribe messages members granted us.

WeChat lets a mini-program send a subscribe message only against a grant the
member gave (``wx.requestSubscribeMessage``), one message per grant. The
mini-program reports what the member accepted; we keep the count per member
and template, take one when a message goes out, and so pick the channel
without asking WeChat (which answers 43101 when none is left). Shape::

    {_id: "<member id>|<template id>", member_id, template_id, count, updated_at}

Example::

    await add(db, member_id, ["TPL_MEETING"], now)
    if await take(db, member_id, "TPL_MEETING"): ...
"""

from __future__ import annotations

from datetime import datetime

from bson import ObjectId
from pymongo import IndexModel, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

COLLECTION = "notify_grants"
# WeChat keeps one-time grants without limit; we cap what one member can pile up.
MAX_GRANTS = 50

INDEXES: dict[str, list[IndexModel]] = {}
INDEXES[COLLECTION] = []  # every query is by _id


def grant_id(member_id: ObjectId, template_id: str) -> str:
    return f"{member_id}|{template_id}"


async def add(db: AsyncDatabase, member_id: ObjectId, template_ids: list[str], at: datetime) -> None:
    ops = [UpdateOne({"_id": grant_id(member_id, t)},
                     {"$inc": {"count": 1}, "$set": {"updated_at": at},
                      "$setOnInsert": {"member_id": member_id, "template_id": t}}, upsert=True)
           for t in template_ids]
    if ops:
        await db[COLLECTION].bulk_write(ops, ordered=False)
        # Keep the pile bounded (a looping client must not grow it forever).
        await db[COLLECTION].bulk_write(
            [UpdateOne({"_id": grant_id(member_id, t), "count": {"$gt": MAX_GRANTS}},
                       {"$set": {"count": MAX_GRANTS}}) for t in template_ids], ordered=False)


async def counts(db: AsyncDatabase, member_ids: list[ObjectId], template_id: str) -> dict[ObjectId, int]:
    """Grants left per member for one template (members without any are absent)."""
    if not member_ids or not template_id:
        return {}
    found = await db[COLLECTION].find(
        {"_id": {"$in": [grant_id(m, template_id) for m in member_ids]}},
        {"member_id": 1, "count": 1}).to_list()
    return {doc["member_id"]: doc["count"] for doc in found if doc["count"] > 0}


async def take(db: AsyncDatabase, member_id: ObjectId, template_id: str) -> bool:
    """Use one grant; False when none is left."""
    result = await db[COLLECTION].update_one(
        {"_id": grant_id(member_id, template_id), "count": {"$gt": 0}}, {"$inc": {"count": -1}})
    return result.modified_count == 1


async def give_back(db: AsyncDatabase, member_id: ObjectId, template_id: str) -> None:
    """WeChat did not take the message (not for 43101): the grant is still good."""
    await db[COLLECTION].update_one({"_id": grant_id(member_id, template_id)}, {"$inc": {"count": 1}})


async def for_member(db: AsyncDatabase, member_id: ObjectId, template_ids: list[str]) -> dict[str, int]:
    if not template_ids:
        return {}
    found = await db[COLLECTION].find(
        {"_id": {"$in": [grant_id(member_id, t) for t in template_ids]}},
        {"template_id": 1, "count": 1}).to_list()
    return {doc["template_id"]: doc["count"] for doc in found}
