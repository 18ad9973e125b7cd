"""Collections ``attendance`` (one document per member marked at a meeting),
``attendance_rolls`` (who may have a mark: a meeting's marks are found through
them) and ``attendance_counts`` (a running meeting's counters).

Shapes::

    attendance:        {_id: "<meeting_id>:<member_id>", meeting_id, member_id,
                        status: present|online|excused, how, at, nonce?, by?, replaced?}
    attendance_rolls:  {_id: ObjectId, meeting_id, members: [member_id, ...]}
    attendance_counts: {_id: meeting_id, present, online, excused,   # increments, see below
                        rev, removed,        # changes counted; marks removed (the live board)
                        gate}                # the check-in gate: see models.meetings

Why not in the meeting document: SecantusDB rewrites a whole document on each
update, so a mark written into the meeting costs what the meeting weighs (a
5,000-member meeting's document with its marks: ~100 ms of its CPU an update).
Here a mark is one small insert whatever the meeting's size, and the key makes
it exactly-once: ``_id`` is the pair (meeting, member), so a second insert of
the same pair fails with a duplicate key, across processes, whoever comes
first. Marks have no secondary index: SecantusDB spends ~0.2 ms of its CPU per
index entry, twice what the insert itself costs. A meeting's marks are found
through its rolls instead: whoever is about to write marks first inserts one
roll naming those members (one document for a whole round of check-ins), so
the rolls name everybody who may have a mark, and the marks are then read by
``_id`` (:func:`of_meeting`). These documents serve a meeting while it runs
(``counts_live``): once it has finished and been settled, its marks are kept in
the meeting document (the shape the demo history is loaded in) and go from here.

The counters do not live in the meeting document either: its ``expected`` list
alone makes an update of a 5,000-member meeting cost ~28 ms. They are
increments in ``attendance_counts`` (one small document per meeting), added to
the meeting's own ``counts`` by ``models.meetings`` when it reads a meeting
(``counts_live``), and folded into the meeting when it is settled after it
finished (:mod:`wxbackend.services.meetings.tally`).

A mark and its increment are two writes: whoever created, changed or removed a
mark (and only they: the insert, or the conditional update or delete, has one
winner) moves the counters afterwards by exactly that change. A process killed
between the two leaves the counters short of the marks; the settling after the
meeting recounts from the marks, which are the record. Example::

    new, taken = await claim(db, meeting_id, {member_id: {"status": "present", "how": "rotating", "at": now}})
    await add_counts(db, meeting_id, {"present": len(new)})
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterable
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DeleteOne, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

COLLECTION = "attendance"
ROLLS = "attendance_rolls"
COUNTS = "attendance_counts"
STATUSES = ("present", "online", "excused")
DUPLICATE_KEY = 11000
# SecantusDB's "_id $in" costs ~0.15 ms of its CPU an id up to ~50 ids, twice that beyond.
ID_BATCH = 50

# Marks reach an organisation only through their meeting (scope is checked there), so
# they carry no org_ancestors: a subtree move does not rewrite millions of marks.
SCOPED: tuple[str, ...] = ()
INDEXES: dict[str, list[IndexModel]] = {
    COLLECTION: [],  # by _id only (see the module docstring)
    # A meeting's rolls, or those written since a time (ObjectIds begin with it).
    ROLLS: [IndexModel([("meeting_id", ASCENDING), ("_id", ASCENDING)])],
    COUNTS: [],  # by _id only
}
# What a reader of a mark gets: the mark as the meeting once embedded it.
KEYS = ("_id", "meeting_id", "member_id")


def mark_id(meeting_id: ObjectId, member_id: ObjectId | str) -> str:
    return f"{meeting_id}:{member_id}"


def bare(doc: dict[str, Any]) -> dict[str, Any]:
    """The mark without its keys: ``{status, how, at, nonce?, by?, replaced?}``."""
    return {k: v for k, v in doc.items() if k not in KEYS}


def _oid(member_id: ObjectId | str) -> ObjectId:
    return member_id if isinstance(member_id, ObjectId) else ObjectId(member_id)


def new_doc(meeting_id: ObjectId, member_id: ObjectId | str, mark: dict[str, Any]) -> dict[str, Any]:
    member = _oid(member_id)
    return {"_id": mark_id(meeting_id, member), "meeting_id": meeting_id, "member_id": member, **mark}


def new_roll(meeting_id: ObjectId, member_ids: Iterable[ObjectId | str]) -> dict[str, Any]:
    return {"_id": ObjectId(), "meeting_id": meeting_id, "members": [_oid(k) for k in member_ids]}


def tally(marks: Iterable[dict[str, Any]]) -> dict[str, int]:
    """``{present, online, excused}`` of some marks."""
    counts = dict.fromkeys(STATUSES, 0)
    for mark in marks:
        counts[mark["status"]] += 1
    return counts


# -- marks -----------------------------------------------------------------------------

async def enrol(db: AsyncDatabase, meeting_id: ObjectId, member_ids: Iterable[ObjectId | str]) -> None:
    """Name members on the meeting's rolls *before* writing or changing their marks, so that
    whatever happens next (a crash included) the marks can be found."""
    roll = new_roll(meeting_id, member_ids)
    if roll["members"]:
        await db[ROLLS].insert_one(roll)


async def claim(db: AsyncDatabase, meeting_id: ObjectId,
                marks: dict[str, dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Insert the first mark of each member (``{member_id: mark}``); (members newly marked,
    members who had a mark already). One roll, then one ``insert_many``, unordered: a
    duplicate key refuses that member only."""
    if not marks:
        return [], []
    keys = list(marks)
    await enrol(db, meeting_id, keys)
    try:
        await db[COLLECTION].insert_many([new_doc(meeting_id, k, marks[k]) for k in keys], ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors") or []
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        taken = {keys[e["index"]] for e in errors}
        return [k for k in keys if k not in taken], [k for k in keys if k in taken]
    return keys, []


async def release(db: AsyncDatabase, meeting_id: ObjectId, marks: dict[str, dict[str, Any]]) -> int:
    """Take back marks this process has just claimed (``{member_id: mark}``), each only if it
    is still exactly that mark; how many went (never counted; a board may have seen them)."""
    if not marks:
        return 0
    ops = [DeleteOne({"_id": mark_id(meeting_id, k), "status": m["status"], "how": m["how"], "at": m.get("at")})
           for k, m in marks.items()]
    result = await db[COLLECTION].bulk_write(ops, ordered=False)
    await add_counts(db, meeting_id, {"removed": result.deleted_count})
    return result.deleted_count


async def get(db: AsyncDatabase, meeting_id: ObjectId, member_id: ObjectId | str) -> dict[str, Any] | None:
    doc = await db[COLLECTION].find_one({"_id": mark_id(meeting_id, member_id)})
    return bare(doc) if doc else None


async def _by_ids(db: AsyncDatabase, ids: list[str]) -> list[dict[str, Any]]:
    found = []
    for i in range(0, len(ids), ID_BATCH):
        found.extend(await db[COLLECTION].find({"_id": {"$in": ids[i:i + ID_BATCH]}}).to_list())
    return found


async def of_members(db: AsyncDatabase, meeting_id: ObjectId,
                     member_ids: Iterable[ObjectId | str]) -> dict[str, dict[str, Any]]:
    """``{member_id: mark}`` of these members at one meeting (point lookups by ``_id``)."""
    return {str(d["member_id"]): bare(d)
            for d in await _by_ids(db, [mark_id(meeting_id, k) for k in member_ids])}


async def of_pairs(db: AsyncDatabase, pairs: Iterable[tuple[ObjectId, ObjectId | str]]
                   ) -> dict[tuple[ObjectId, str], dict[str, Any]]:
    """``{(meeting_id, member_id): mark}`` for (meeting, member) pairs: one member's marks over
    many meetings, or a few members' over one."""
    return {(d["meeting_id"], str(d["member_id"])): bare(d)
            for d in await _by_ids(db, [mark_id(m, k) for m, k in pairs])}


async def of_meeting(db: AsyncDatabase, meeting_id: ObjectId,
                     since: ObjectId | None = None) -> dict[str, dict[str, Any]]:
    """Every mark of a meeting, ``{member_id: mark}``, oldest first: the members its rolls
    name, read by ``_id`` (~0.15 ms of SecantusDB a member). With ``since`` (an ObjectId
    lower bound, ``Clock.id_at``) only the members of the rolls written since."""
    query: dict[str, Any] = {"meeting_id": meeting_id}
    if since is not None:
        query["_id"] = {"$gte": since}
    members: dict[ObjectId, None] = {}
    async for roll in db[ROLLS].find(query, {"members": 1}):
        members.update(dict.fromkeys(roll["members"]))
    found = await of_members(db, meeting_id, members)
    return dict(sorted(found.items(), key=lambda item: item[1]["at"]))


async def replace_if(db: AsyncDatabase, meeting_id: ObjectId, member_id: ObjectId | str,
                     expected: dict[str, Any], mark: dict[str, Any]) -> bool:
    """Replace a member's mark only while it still matches ``expected`` (one winner). The
    member is on the rolls already (a mark exists); the new roll tells the boards."""
    await enrol(db, meeting_id, [member_id])
    result = await db[COLLECTION].replace_one({"_id": mark_id(meeting_id, member_id), **expected},
                                              new_doc(meeting_id, member_id, mark))
    return result.matched_count == 1


async def remove_if(db: AsyncDatabase, meeting_id: ObjectId, member_id: ObjectId | str,
                    expected: dict[str, Any]) -> bool:
    """Delete a member's mark only while it still matches ``expected`` (one winner)."""
    result = await db[COLLECTION].delete_one({"_id": mark_id(meeting_id, member_id), **expected})
    return result.deleted_count == 1


async def insert_many(db: AsyncDatabase, docs: list[dict[str, Any]]) -> None:
    """Bulk load (the demo history, fixtures): documents made by :func:`new_doc`, with
    one roll per meeting."""
    if not docs:
        return
    by_meeting: dict[ObjectId, list[ObjectId]] = {}
    for doc in docs:
        by_meeting.setdefault(doc["meeting_id"], []).append(doc["member_id"])
    await db[ROLLS].insert_many([new_roll(m, ids) for m, ids in by_meeting.items()], ordered=False)
    await db[COLLECTION].insert_many(docs, ordered=False)


# -- counters ----------------------------------------------------------------------------

async def add_counts(db: AsyncDatabase, meeting_id: ObjectId, inc: dict[str, int]) -> None:
    """Move a meeting's running counters (created by the first increment); each change also
    moves ``rev`` (a board that saw the same ``rev`` has nothing new to read). Whoever
    removes marks adds ``removed`` (a board must then read every mark again)."""
    inc = {k: v for k, v in inc.items() if v}
    if inc:
        await db[COUNTS].update_one({"_id": meeting_id}, {"$inc": {**inc, "rev": 1}}, upsert=True)


async def add_counts_through(db: AsyncDatabase, meeting_id: ObjectId, inc: dict[str, int], gate: str | None) -> bool:
    """:func:`add_counts` only while the meeting's check-in gate is still ``gate`` (a token
    read before the meeting): False if it turned since, or there is none."""
    inc = {k: v for k, v in inc.items() if v}
    if gate is None or not inc:
        return False
    result = await db[COUNTS].update_one({"_id": meeting_id, "gate": gate}, {"$inc": {**inc, "rev": 1}})
    return result.matched_count == 1


async def gate(db: AsyncDatabase, meeting_id: ObjectId) -> str | None:
    """The meeting's check-in gate: a token, or None while its times or status change. A
    meeting that never had one (written before gates, or without this module) gets one."""
    doc = await db[COUNTS].find_one({"_id": meeting_id}, {"gate": 1})
    if doc is not None and "gate" in doc:
        return doc["gate"]
    token = secrets.token_hex(8)
    if doc is None:
        with contextlib.suppress(DuplicateKeyError):  # created meanwhile: read it below
            await db[COUNTS].insert_one({"_id": meeting_id, "gate": token})
            return token
    elif (await db[COUNTS].update_one({"_id": meeting_id, "gate": {"$exists": False}},
                                      {"$set": {"gate": token}})).matched_count:
        return token
    return ((await db[COUNTS].find_one({"_id": meeting_id}, {"gate": 1})) or {}).get("gate")


async def turn_gate(db: AsyncDatabase, meeting_id: ObjectId, *, closed: bool) -> None:
    """Close the gate before a change of the meeting's status or times, open it (a new token)
    after: a check-in that saw the old token then counts only by reading the meeting."""
    await db[COUNTS].update_one({"_id": meeting_id},
                                {"$set": {"gate": None if closed else secrets.token_hex(8)}}, upsert=True)


async def revision(db: AsyncDatabase, meeting_id: ObjectId) -> tuple[int, int]:
    """(changes counted, marks removed) of a meeting's running counters; (0, 0) without any."""
    doc = await db[COUNTS].find_one({"_id": meeting_id}, {"rev": 1, "removed": 1}) or {}
    return doc.get("rev", 0), doc.get("removed", 0)


async def counts_of(db: AsyncDatabase, meeting_ids: list[ObjectId]) -> dict[ObjectId, dict[str, int]]:
    """The running counters of these meetings (those that have any)."""
    if not meeting_ids:
        return {}
    if len(meeting_ids) == 1:
        doc = await db[COUNTS].find_one({"_id": meeting_ids[0]})
        found = [doc] if doc else []
    else:
        found = await db[COUNTS].find({"_id": {"$in": meeting_ids}}).to_list()
    return {d["_id"]: {s: d.get(s, 0) for s in STATUSES} for d in found}


async def drop_meeting(db: AsyncDatabase, meeting_id: ObjectId, member_ids: Iterable[ObjectId | str]) -> None:
    """Forget a settled meeting's marks (these members'), rolls and running counters: the
    meeting holds them from now on."""
    ids = [mark_id(meeting_id, k) for k in member_ids]
    for i in range(0, len(ids), ID_BATCH):
        await db[COLLECTION].delete_many({"_id": {"$in": ids[i:i + ID_BATCH]}})
    await db[ROLLS].delete_many({"meeting_id": meeting_id})
    await db[COUNTS].delete_one({"_id": meeting_id})
