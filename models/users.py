"""Collection ``users``: people who log in to the management web.

Shape::

    {_id, username, display_name, password_hash (argon2),
     roles: [{role: city_admin|committee_admin|secretary|auditor, org_id}],
     active: bool, created_at, updated_at, last_login_at,
     session_gen: int (absent = 0; raised to end every session of the user),
     must_change_password: bool (set by a reset, cleared by the user's own change),
     password_changed_at}
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

import models

COLLECTION = "users"

INDEXES: dict[str, list[IndexModel]] = {}
INDEXES[COLLECTION] = [
    IndexModel([("username", ASCENDING)], unique=True),
    IndexModel([("roles.org_id", ASCENDING)]),
]


async def get(db: AsyncDatabase, user_id: ObjectId) -> dict[str, Any] | None:
    return await db[COLLECTION].find_one({"_id": user_id})


async def by_username(db: AsyncDatabase, username: str) -> dict[str, Any] | None:
    return await db[COLLECTION].find_one({"username": username})


async def insert(db: AsyncDatabase, doc: dict[str, Any]) -> None:
    await db[COLLECTION].insert_one(doc)


async def update(db: AsyncDatabase, user_id: ObjectId, changes: dict[str, Any]) -> None:
    await db[COLLECTION].update_one({"_id": user_id}, changes)


async def update_if(db: AsyncDatabase, user_id: ObjectId, expected: dict[str, Any],
                    changes: dict[str, Any]) -> dict[str, Any] | None:
    """``changes`` only if the user still matches ``expected``; the user after, or None."""
    return await models.update_if(db[COLLECTION], user_id, expected, changes)


async def at_org(db: AsyncDatabase, org_id: ObjectId) -> list[dict[str, Any]]:
    """Users holding a role at this very organisation (not below it), by username."""
    cursor = db[COLLECTION].find({"roles.org_id": org_id}, {"password_hash": 0})
    return sorted(await cursor.to_list(), key=lambda u: u["username"])


async def for_orgs(db: AsyncDatabase, org_ids: list[ObjectId]) -> list[dict[str, Any]]:
    cursor = db[COLLECTION].find({"roles.org_id": {"$in": org_ids}},
                                 {"username": 1, "display_name": 1, "roles": 1, "active": 1})
    return await cursor.sort("username", ASCENDING).to_list()
