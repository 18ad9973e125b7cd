"""Read-only lookups of notification recipients in ``members``, ``users`` and ``organisations``.

The notify service needs a few fields of many people at once (where to send,
which organisation they belong to); these queries fetch exactly those, by
``_id`` lists or by indexed organisation fields::

    people = await members_by_ids(db, [member_id])
    users = await users_by_ids(db, [user_id])
    chiefs = await org_secretaries(db, district_id)
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase

# What choosing a channel needs of a member.
MEMBER_FIELDS = {"name": 1, "state": 1, "org_id": 1, "org_ancestors": 1, "oa_openid": 1,
                 "oa_following": 1, "mp_openid": 1}
USER_FIELDS = {"username": 1, "display_name": 1, "roles": 1, "active": 1, "member_id": 1}
# $in lists stay this short so that each query is a handful of index lookups.
CHUNK = 500


async def members_by_ids(db: AsyncDatabase, ids: list[ObjectId]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for i in range(0, len(ids), CHUNK):
        found.extend(await db["members"].find({"_id": {"$in": ids[i:i + CHUNK]}}, MEMBER_FIELDS)
                     .to_list())
    return found


async def members_in_orgs(db: AsyncDatabase, org_ids: list[ObjectId]) -> list[dict[str, Any]]:
    """Members of some organisations (not their subtrees)."""
    if not org_ids:
        return []
    query = {"org_id": org_ids[0]} if len(org_ids) == 1 else {"org_id": {"$in": org_ids}}
    return await db["members"].find(query, MEMBER_FIELDS).to_list()


async def users_by_ids(db: AsyncDatabase, ids: list[ObjectId]) -> list[dict[str, Any]]:
    if not ids:
        return []
    return await db["users"].find({"_id": {"$in": ids}}, USER_FIELDS).to_list()


async def users_with_roles_in(db: AsyncDatabase, org_ids: list[ObjectId]) -> list[dict[str, Any]]:
    if not org_ids:
        return []
    return await db["users"].find({"roles.org_id": {"$in": org_ids}}, USER_FIELDS).to_list()


async def org_secretaries(db: AsyncDatabase, scope_id: ObjectId) -> list[dict[str, Any]]:
    """Organisations of a subtree that record a secretary (书记), with that member's id."""
    found = await db["organisations"].find({"org_ancestors": scope_id},
                                           {"secretary": 1, "status": 1}).to_list()
    return [o for o in found if o.get("secretary") and o.get("status", "active") == "active"]


async def orgs_by_ids(db: AsyncDatabase, ids: list[ObjectId]) -> dict[ObjectId, dict[str, Any]]:
    if not ids:
        return {}
    found = await db["organisations"].find({"_id": {"$in": list(set(ids))}},
                                           {"name": 1, "org_ancestors": 1}).to_list()
    return {o["_id"]: o for o in found}
