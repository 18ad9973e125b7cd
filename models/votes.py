"""Collections ``votes``, ``vote_ballots`` and ``vote_voters``: 投票表决 in a meeting.

Shapes (docs/MEETINGS-DESIGN.md)::

    votes:        {_id, meeting_id, org_id, org_ancestors, title, options: [str],
                   multiple, anonymous, status: open|closed, counts: [n per option],
                   ballots: n, created_by: {id, name}, created_at, closed_at, closed_by}
    vote_ballots: named vote:     {_id: "<vote>:<member>", vote_id, member_id, name, choices, at}
                  anonymous vote: {_id: <random hex>, vote_id, choices}
    vote_voters:  anonymous vote: {_id: "<vote>:<member>", vote_id}

"One member, one ballot" is the unique ``_id`` "<vote>:<member>" (of the
ballot for a named vote, of the voter record for an anonymous one). An
anonymous ballot carries neither the member nor a time: its id is random (an
ObjectId would embed the time, which could be matched to the voter record),
so nothing stored links a choice to a member::

    await claim(db, VOTERS, {"_id": voter_key(vote_id, member_id), "vote_id": vote_id})
    counted = await count_ballot(db, vote_id, [0, 2])
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

import models

COLLECTION = "votes"
BALLOTS = "vote_ballots"
VOTERS = "vote_voters"

# Collections whose documents carry org_ancestors (rewritten when a subtree moves).
SCOPED = (COLLECTION,)
INDEXES: dict[str, list[IndexModel]] = {}
INDEXES[COLLECTION] = [
    IndexModel([("meeting_id", ASCENDING), ("_id", ASCENDING)]),
    IndexModel([("org_id", ASCENDING)]),  # moving a subtree rewrites org_ancestors by org_id
]
INDEXES[BALLOTS] = [IndexModel([("vote_id", ASCENDING), ("_id", ASCENDING)])]
INDEXES[VOTERS] = [IndexModel([("vote_id", ASCENDING)])]


def voter_key(vote_id: ObjectId, member_id: ObjectId) -> str:
    return f"{vote_id}:{member_id}"


async def insert(db: AsyncDatabase, doc: dict[str, Any]) -> None:
    await db[COLLECTION].insert_one(doc)


async def get(db: AsyncDatabase, vote_id: ObjectId) -> dict[str, Any] | None:
    return await db[COLLECTION].find_one({"_id": vote_id})


async def of_meeting(db: AsyncDatabase, meeting_id: ObjectId, limit: int = 100) -> list[dict[str, Any]]:
    cursor = db[COLLECTION].find({"meeting_id": meeting_id}).sort("_id", ASCENDING).limit(limit)
    return await cursor.to_list()


async def claim(db: AsyncDatabase, collection: str, doc: dict[str, Any]) -> bool:
    """Insert a ballot or voter record under its unique id; False if one exists."""
    try:
        await db[collection].insert_one(doc)
    except DuplicateKeyError:
        return False
    return True


async def release(db: AsyncDatabase, collection: str, doc_id: Any) -> None:
    await db[collection].delete_one({"_id": doc_id})


async def count_ballot(db: AsyncDatabase, vote_id: ObjectId, choices: list[int]) -> bool:
    """Add one ballot to the totals, only while the vote is open (atomic with closing)."""
    inc = {"ballots": 1, **{f"counts.{i}": 1 for i in choices}}
    result = await db[COLLECTION].update_one({"_id": vote_id, "status": "open"}, {"$inc": inc})
    return result.matched_count == 1


async def insert_ballot(db: AsyncDatabase, doc: dict[str, Any]) -> None:
    await db[BALLOTS].insert_one(doc)


async def have_voted(db: AsyncDatabase, keys: list[str]) -> set[str]:
    """Which "<vote>:<member>" keys hold a named ballot or an anonymous voter record."""
    if not keys:
        return set()
    found = set()
    for name in (BALLOTS, VOTERS):
        found.update([d["_id"] async for d in db[name].find({"_id": {"$in": keys}}, {"_id": 1})])
    return found


async def named_ballots(db: AsyncDatabase, vote_id: ObjectId, limit: int = 2000) -> list[dict[str, Any]]:
    """The ballots of a vote (for a named vote: who chose what), in id order."""
    cursor = db[BALLOTS].find({"vote_id": vote_id}).sort("_id", ASCENDING).limit(limit)
    return await cursor.to_list()


async def update_if(db: AsyncDatabase, vote_id: ObjectId, expected: dict[str, Any],
                    changes: dict[str, Any]) -> dict[str, Any] | None:
    return await models.update_if(db[COLLECTION], vote_id, expected, changes)
