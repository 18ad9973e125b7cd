"""Collection ``organisations``: the party organisation tree.

Shape::

    {_id: ObjectId, code: "D01-0001", name, type, category, status,
     parent_id, ancestors: [root, ..., parent], org_ancestors: ancestors + [_id],
     depth, position,
     secretary: {member_id, name} | None, committee: [{member_id, name, duty}],
     term_start: "YYYY-MM-DD" | None, term_years,
     member_count, full_member_count, subtree_member_count, child_count,
     created_at, updated_at, dissolved_at}

``member_count`` and ``full_member_count`` count active members whose
``org_id`` is this organisation; ``subtree_member_count`` counts those of the
whole subtree; ``child_count`` counts active child organisations. They are
maintained by the services, never recomputed at request time.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

import models

COLLECTION = "organisations"

INDEXES: dict[str, list[IndexModel]] = {}
INDEXES[COLLECTION] = [
    IndexModel([("code", ASCENDING)], unique=True),
    IndexModel([("parent_id", ASCENDING), ("position", ASCENDING)]),
    IndexModel([("org_ancestors", ASCENDING), ("type", ASCENDING)]),
    IndexModel([("name", ASCENDING)]),
]

# What the tree snapshot and list pages need: never the committee arrays.
TREE_FIELDS = {"name": 1, "code": 1, "type": 1, "category": 1, "status": 1, "parent_id": 1,
               "depth": 1, "position": 1, "member_count": 1, "subtree_member_count": 1,
               "child_count": 1, "term_start": 1, "term_years": 1}


def collection(db: AsyncDatabase):
    return db[COLLECTION]


async def get(db: AsyncDatabase, org_id: ObjectId) -> dict[str, Any] | None:
    return await db[COLLECTION].find_one({"_id": org_id})


async def by_ids(db: AsyncDatabase, org_ids: list[ObjectId], fields: dict[str, int]) -> list[dict[str, Any]]:
    """Organisations by id (the names of an audit page); in no particular order."""
    if not org_ids:
        return []
    return await db[COLLECTION].find({"_id": {"$in": org_ids}}, fields).to_list()


async def get_by_code(db: AsyncDatabase, code: str) -> dict[str, Any] | None:
    return await db[COLLECTION].find_one({"code": code})


async def children(db: AsyncDatabase, parent_id: ObjectId) -> list[dict[str, Any]]:
    cursor = db[COLLECTION].find({"parent_id": parent_id}, TREE_FIELDS).sort("position", ASCENDING)
    return await cursor.to_list()


async def roots(db: AsyncDatabase) -> list[dict[str, Any]]:
    return await db[COLLECTION].find({"parent_id": None}, TREE_FIELDS).to_list()


async def search_by_name(db: AsyncDatabase, scope_ids: list[ObjectId], prefix: str,
                         limit: int = 50) -> list[dict[str, Any]]:
    query = {"name": {"$gte": prefix, "$lt": prefix + "\uffff"},
             "org_ancestors": {"$in": scope_ids}}
    return await db[COLLECTION].find(query, TREE_FIELDS).sort("name", ASCENDING).limit(limit).to_list()


async def next_position(db: AsyncDatabase, parent_id: ObjectId | None) -> int:
    last = await db[COLLECTION].find_one({"parent_id": parent_id}, {"position": 1},
                                         sort=[("position", -1)])
    return (last["position"] + 1) if last else 0


async def insert(db: AsyncDatabase, doc: dict[str, Any]) -> None:
    await db[COLLECTION].insert_one(doc)


async def update_if(db: AsyncDatabase, doc_id: ObjectId, expected: dict[str, Any],
                    changes: dict[str, Any]) -> dict[str, Any] | None:
    """Apply ``changes`` only while the document still matches ``expected``."""
    return await models.update_if(db[COLLECTION], doc_id, expected, changes)


async def adjust_member_counts(db: AsyncDatabase, org_id: ObjectId, org_ancestors: list[ObjectId],
                               members: int, full: int) -> None:
    """Counters after members join or leave ``org_id`` (``org_ancestors`` includes it)."""
    if members or full:
        await db[COLLECTION].update_one(
            {"_id": org_id}, {"$inc": {"member_count": members, "full_member_count": full}})
    if members:
        await db[COLLECTION].update_many(
            {"_id": {"$in": list(org_ancestors)}}, {"$inc": {"subtree_member_count": members}})


async def adjust_counts_once(db: AsyncDatabase, org_id: ObjectId, marker: str, inc: dict[str, int]) -> bool:
    """``$inc`` the counters once per ``marker`` (a job that resumes after a crash must not
    count twice): the marker is kept on the document until :func:`forget_count_markers`."""
    result = await db[COLLECTION].update_one(
        {"_id": org_id, "count_markers": {"$ne": marker}},
        {"$inc": inc, "$push": {"count_markers": {"$each": [marker], "$slice": -50}}})
    return result.modified_count == 1


async def forget_count_markers(db: AsyncDatabase, org_ids: list[ObjectId], marker: str) -> None:
    if org_ids:
        await db[COLLECTION].update_many({"_id": {"$in": org_ids}}, {"$pull": {"count_markers": marker}})


async def adjust_subtree_counts(db: AsyncDatabase, org_ids: list[ObjectId], members: int) -> None:
    if members and org_ids:
        await db[COLLECTION].update_many({"_id": {"$in": org_ids}},
                                         {"$inc": {"subtree_member_count": members}})


async def adjust_child_count(db: AsyncDatabase, org_id: ObjectId | None, delta: int) -> None:
    if org_id is not None:
        await db[COLLECTION].update_one({"_id": org_id}, {"$inc": {"child_count": delta}})


async def subtree(db: AsyncDatabase, org_id: ObjectId) -> list[dict[str, Any]]:
    """Every organisation of a subtree (structure changes only, not pages)."""
    cursor = db[COLLECTION].find({"org_ancestors": org_id},
                                 {"org_ancestors": 1, "ancestors": 1, "depth": 1})
    return await cursor.to_list()


async def whole_tree(db: AsyncDatabase) -> list[dict[str, Any]]:
    """Every organisation, for the in-process tree snapshot: each root's subtree."""
    found: list[dict[str, Any]] = []
    for root in await db[COLLECTION].find({"parent_id": None}, {"_id": 1}).to_list():
        fields = {**TREE_FIELDS, "ancestors": 1}
        found.extend(await db[COLLECTION].find({"org_ancestors": root["_id"]}, fields).to_list())
    return found
