"""Collection ``members``: party members.

Shape::

    {_id, name, gender, ethnicity, birth_date: "YYYY-MM-DD", education,
     id_card_enc: Binary, id_card_bidx: str, phone_enc: Binary | None, phone_bidx,
     party_status: probationary|full, joined_on, full_on, category,
     org_id, org_ancestors, group_id, state: active|transferred_out|deceased|stopped,
     oa_openid, mp_openid, unionid (absent when unbound), created_at, updated_at}

ID-card number and phone are only ever stored encrypted; ``*_bidx`` is the
HMAC blind index used for exact lookup (see ``wxbackend.fieldcrypto``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

import models

COLLECTION = "members"

# Collections whose documents carry org_ancestors (rewritten when a subtree moves).
SCOPED = (COLLECTION,)
INDEXES: dict[str, list[IndexModel]] = {}
INDEXES[COLLECTION] = [
    IndexModel([("org_id", ASCENDING), ("name", ASCENDING)]),
    IndexModel([("org_ancestors", ASCENDING), ("name", ASCENDING)]),
    IndexModel([("id_card_bidx", ASCENDING)], unique=True),
    IndexModel([("phone_bidx", ASCENDING)]),
    # sparse: unbound members have no openid; sparse (not partial) indexes are
    # the ones SecantusDB's planner uses.
    IndexModel([("oa_openid", ASCENDING)], unique=True, sparse=True),
    IndexModel([("mp_openid", ASCENDING)], unique=True, sparse=True),
    IndexModel([("unionid", ASCENDING)], sparse=True),
]

# Fields a list page shows; never the encrypted blobs of the whole city.
LIST_FIELDS = {"name": 1, "gender": 1, "birth_date": 1, "party_status": 1, "category": 1,
               "org_id": 1, "org_ancestors": 1, "state": 1, "phone_enc": 1, "education": 1,
               "oa_openid": 1, "mp_openid": 1}


async def get(db: AsyncDatabase, member_id: ObjectId) -> dict[str, Any] | None:
    return await db[COLLECTION].find_one({"_id": member_id})


async def by_ids(db: AsyncDatabase, member_ids: list[ObjectId],
                 fields: dict[str, int]) -> list[dict[str, Any]]:
    """Members by id (meeting attendees, notice recipients); in no particular order."""
    if not member_ids:
        return []
    return await db[COLLECTION].find({"_id": {"$in": member_ids}}, fields).to_list()


async def by_id_card(db: AsyncDatabase, bidx: str) -> dict[str, Any] | None:
    return await db[COLLECTION].find_one({"id_card_bidx": bidx})


async def by_id_cards(db: AsyncDatabase, bidxs: Iterable[str]) -> dict[str, dict[str, Any]]:
    cursor = db[COLLECTION].find({"id_card_bidx": {"$in": list(bidxs)}},
                                 {"id_card_bidx": 1, "org_id": 1, "org_ancestors": 1,
                                  "state": 1, "party_status": 1})
    return {doc["id_card_bidx"]: doc async for doc in cursor}


async def by_openid(db: AsyncDatabase, field: str, openid: str) -> dict[str, Any] | None:
    assert field in ("oa_openid", "mp_openid", "unionid")
    return await db[COLLECTION].find_one({field: openid})


async def in_orgs(db: AsyncDatabase, org_ids: list[ObjectId],
                  fields: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Members of some organisations (not their subtrees), by name."""
    query = {"org_id": org_ids[0]} if len(org_ids) == 1 else {"org_id": {"$in": org_ids}}
    cursor = db[COLLECTION].find(query, fields or LIST_FIELDS).sort("name", ASCENDING)
    return await cursor.to_list()


async def in_org_range(db: AsyncDatabase, org_id: ObjectId, low: str | None, high: str | None, *,
                       through: bool = False) -> list[dict[str, Any]]:
    """Members of one organisation with ``low <= name < high`` (``<= high`` when ``through``);
    None leaves that side open. A tight range is what keeps a large branch's page cheap:
    the database reads every document the filter matches, whatever the limit."""
    query: dict[str, Any] = {"org_id": org_id}
    names: dict[str, str] = {}
    if low is not None:
        names["$gte"] = low
    if high is not None:
        names["$lte" if through else "$lt"] = high
    if names:
        query["name"] = names
    return await db[COLLECTION].find(query, LIST_FIELDS).sort("name", ASCENDING).to_list()


async def names_in_org(db: AsyncDatabase, org_id: ObjectId) -> list[str]:
    """Every member's name in one organisation, sorted: read once to cut it into name intervals."""
    cursor = db[COLLECTION].find({"org_id": org_id}, {"name": 1, "_id": 0}).sort("name", ASCENDING)
    return [doc["name"] async for doc in cursor]


# Above every name that starts with a prefix (the last code point, not U+FFFF: a name may
# hold a character beyond the Basic Multilingual Plane).
PREFIX_END = "\U0010ffff"


async def search_name(db: AsyncDatabase, scope_ids: list[ObjectId], prefix: str,
                      limit: int) -> list[dict[str, Any]]:
    query = {"org_ancestors": scope_ids[0] if len(scope_ids) == 1 else {"$in": scope_ids},
             "name": {"$gte": prefix, "$lt": prefix + PREFIX_END}}
    cursor = db[COLLECTION].find(query, LIST_FIELDS).sort("name", ASCENDING).limit(limit)
    return await cursor.to_list()


async def search_name_from(db: AsyncDatabase, scope_id: ObjectId, prefix: str, limit: int, *,
                           after: str | None = None, before: str | None = None) -> list[dict[str, Any]]:
    """Members of a subtree whose name starts with ``prefix``, by (name, _id): those named
    ``after`` or later, or (descending) those named ``before`` or earlier. Namesakes of the
    cursor row on its near side match too; the caller skips them."""
    if before is not None:
        names, order = {"$gte": prefix, "$lte": before}, DESCENDING
    else:
        names, order = {"$gte": max(prefix, after or ""), "$lt": prefix + PREFIX_END}, ASCENDING
    cursor = (db[COLLECTION].find({"org_ancestors": scope_id, "name": names}, LIST_FIELDS)
              .sort([("name", order), ("_id", order)]).limit(limit))
    return await cursor.to_list()


async def by_phone(db: AsyncDatabase, bidx: str) -> list[dict[str, Any]]:
    return await db[COLLECTION].find({"phone_bidx": bidx}, LIST_FIELDS).to_list()


async def insert_many(db: AsyncDatabase, docs: list[dict[str, Any]]) -> None:
    if docs:
        await db[COLLECTION].insert_many(docs, ordered=False)


async def delete_ids(db: AsyncDatabase, member_ids: list[ObjectId]) -> None:
    """Undo of inserts whose ids the caller chose (an import rolled back)."""
    if member_ids:
        await db[COLLECTION].delete_many({"_id": {"$in": member_ids}})


async def bulk_update(db: AsyncDatabase, updates: list[tuple[ObjectId, dict[str, Any]]]) -> None:
    if updates:
        await db[COLLECTION].bulk_write([UpdateOne({"_id": i}, {"$set": s}) for i, s in updates],
                                        ordered=False)


async def update_if(db: AsyncDatabase, doc_id: ObjectId, expected: dict[str, Any],
                    changes: dict[str, Any]) -> dict[str, Any] | None:
    """Apply ``changes`` only while the document still matches ``expected``."""
    return await models.update_if(db[COLLECTION], doc_id, expected, changes)
