"""Collection ``wechat_followers``: followers of the official account not bound to a member.

A bound member's following state lives on the member (``oa_following``,
``oa_followed_at``, ``oa_unfollowed_at``); this small collection remembers the
others, keyed by openid, so that binding later can carry the state over and
the notifications issue can tell a follower from a stranger. Shape::

    {_id: openid, following: bool, followed_at, unfollowed_at, scene: str | None}

``_id`` is the openid, so every query here is a point lookup on the ``_id``
index; no other index is needed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import IndexModel
from pymongo.asynchronous.database import AsyncDatabase

COLLECTION = "wechat_followers"

INDEXES: dict[str, list[IndexModel]] = {}
INDEXES[COLLECTION] = []


async def get(db: AsyncDatabase, openid: str) -> dict[str, Any] | None:
    return await db[COLLECTION].find_one({"_id": openid})


async def followed(db: AsyncDatabase, openid: str, at: datetime, scene: str | None) -> None:
    await db[COLLECTION].update_one(
        {"_id": openid},
        {"$set": {"following": True, "followed_at": at, "scene": scene},
         "$unset": {"unfollowed_at": ""}},
        upsert=True)


async def unfollowed(db: AsyncDatabase, openid: str, at: datetime) -> None:
    await db[COLLECTION].update_one(
        {"_id": openid}, {"$set": {"following": False, "unfollowed_at": at}}, upsert=True)


async def forget(db: AsyncDatabase, openid: str) -> None:
    """The openid is now bound: its state moved to the member document."""
    await db[COLLECTION].delete_one({"_id": openid})
