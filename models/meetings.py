"""Collection ``meetings``: 三会一课 meetings; their marks are in ``models.attendance``.

The data contract is docs/MEETINGS-DESIGN.md. Shape::

    {_id, org_id, org_ancestors,          # the branch holding it (a group's branch)
     type, title, topic, agenda, place, online_link,
     start, end,                          # UTC
     month: "YYYY-MM",                    # of start in Asia/Shanghai
     organiser: {user_id, name},
     audience: {kind: branch|committee|group|list, group_id?, member_ids?},
     expected: [member_id], expected_count, allow_branch_members,
     checkin_secret,                      # random; only the printed codes carry it (never an API/page)
     rotating_only,                       # printed codes refused: the on-screen rotating code only
     geo: {lat, lng} | None,              # the meeting place (GCJ-02): check-in within a radius
     status: draft|planned|in_progress|finished|cancelled,
     published_at, cancelled_at, finished_at, reminded_at,
     counts: {present, online, excused},  # + the running increments while counts_live
     counts_live: bool,                   # marks and increments are documents of their own (until settled)
     attendance: {"<member_id>": {status, how, at, nonce?, by?, replaced?}},   # once settled only
     leave: {"<member_id>": {reason, status, at, decided_by?, decided_at?}},
     materials: [{file_id, name, size, content_type, uploaded_at}],
     minutes: {text, recorded_by, recorded_at, confirmed_by?, confirmed_at?, amendments} | None,
     qr: {oa_ticket?, oa_url?, oa_expires_at?, mp_code_file_id?, made_at?},
     comment_count, vote_count, created_at, updated_at}

While a meeting can change (``counts_live``), its attendance marks are
documents of their own (``models.attendance``, one per member and meeting): a
mark written into the meeting would cost what the meeting weighs. Once it is
settled after it finished (``services.meetings.tally``), they are kept in its
``attendance`` map, as the demo history is loaded. The reads here give a
meeting as its readers know it either way:

- ``counts`` is the meeting's own plus its running increments (one ``_id``
  lookup for the meetings that are ``counts_live``);
- a projection naming ``attendance.<member_id>`` (or ``attendance``) gets an
  ``attendance`` map of that member's mark (or of every mark), read from the
  marks by ``_id`` (or by the meeting's index range). A read without a
  projection does not load marks: a 5,000-member meeting's take ~0.2 s.

"Absent" is never stored. Example::

    doc = new_meeting(org, "theme_day", "三月主题党日", start, end, organiser, tz, now=now)
    await insert(db, doc)
    await mark_attendance(db, doc["_id"], member_id, {"status": "present", ...})
    mine = await get(db, doc["_id"], {"title": 1, f"attendance.{member_id}": 1})
"""

from __future__ import annotations

import contextlib
import secrets
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bson import ObjectId
from gridfs import AsyncGridFSBucket
from gridfs.asynchronous.grid_file import AsyncGridOut
from gridfs.errors import NoFile
from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

import models
from models import attendance as attendance_model

COLLECTION = "meetings"

STATUSES = ("draft", "planned", "in_progress", "finished", "cancelled")
# Statuses in which members may still check in, ask for leave or be reminded.
OPEN_STATUSES = ("planned", "in_progress")
ATTENDANCE_STATUSES = ("present", "online", "excused")
CHECKIN_HOWS = ("oa_qr", "mp_code", "rotating", "manual", "online", "leave")
AUDIENCE_KINDS = ("branch", "committee", "group", "list")
LEAVE_STATUSES = ("pending", "approved", "refused", "withdrawn")

# Collections whose documents carry org_ancestors (rewritten when a subtree moves).
SCOPED = (COLLECTION,)
INDEXES: dict[str, list[IndexModel]] = {}
INDEXES[COLLECTION] = [
    IndexModel([("org_id", ASCENDING), ("start", ASCENDING)]),
    IndexModel([("org_ancestors", ASCENDING), ("month", ASCENDING)]),
    IndexModel([("status", ASCENDING), ("start", ASCENDING)]),
    IndexModel([("org_id", ASCENDING), ("month", ASCENDING)]),
    # Finished meetings whose counters are to be settled (services.meetings.tally).
    IndexModel([("status", ASCENDING), ("finished_at", ASCENDING)]),
]

# What a printed check-in code proves: 16 URL-safe characters (96 random bits), so
# that compact id + secret fit getwxacodeunlimit's 32-character scene.
SECRET_BYTES = 12
# Fields that let someone check in from afar: never in a member-facing projection
# (LIST_FIELDS, the API, pages other than the secretary's printable codes).
SECRET_FIELDS = ("checkin_secret", "qr")

# Materials and cached WeChat-issued codes live in one GridFS bucket. Its indexes
# are declared here so ensure_indexes builds them (GridFS itself would only on
# an empty bucket, after a find that SecantusDB runs as a collection scan).
FILES_BUCKET = "materials"
INDEXES[f"{FILES_BUCKET}.files"] = [IndexModel([("filename", ASCENDING), ("uploadDate", ASCENDING)])]
INDEXES[f"{FILES_BUCKET}.chunks"] = [IndexModel([("files_id", ASCENDING), ("n", ASCENDING)],
                                               unique=True)]

# What lists and calendars show (counts come with counts_live: see _project).
LIST_FIELDS = {"org_id": 1, "org_ancestors": 1, "type": 1, "title": 1, "topic": 1, "place": 1,
               "online_link": 1, "start": 1, "end": 1, "month": 1, "status": 1,
               "expected_count": 1, "counts": 1, "audience": 1, "organiser": 1,
               "comment_count": 1, "vote_count": 1, "allow_branch_members": 1}


def new_checkin_secret() -> str:
    """A fresh secret for a meeting's printed codes (a renewal makes old printouts useless)."""
    return secrets.token_urlsafe(SECRET_BYTES)


def month_of(start: datetime, tz: ZoneInfo) -> str:
    """Compliance period key: the month of ``start`` in local (Shanghai) time."""
    return start.astimezone(tz).strftime("%Y-%m")


def new_meeting(org: dict[str, Any], meeting_type: str, title: str, start: datetime,
                end: datetime, organiser: dict[str, Any], tz: ZoneInfo, *, now: datetime,
                **fields: Any) -> dict[str, Any]:
    """A draft meeting document, made at ``now``, with every maintained field initialised."""
    doc = {
        "_id": ObjectId(), "org_id": org["_id"], "org_ancestors": org["org_ancestors"],
        "type": meeting_type, "title": title, "topic": "", "agenda": "", "place": "",
        "online_link": "", "start": start, "end": end, "month": month_of(start, tz),
        "organiser": organiser, "audience": {"kind": "branch"}, "expected": [],
        "expected_count": 0, "allow_branch_members": False, "status": "draft",
        "checkin_secret": new_checkin_secret(), "rotating_only": False, "geo": None,
        "published_at": None, "cancelled_at": None, "finished_at": None, "reminded_at": None,
        "counts": {"present": 0, "online": 0, "excused": 0}, "counts_live": True,
        "leave": {}, "materials": [], "minutes": None, "qr": {},
        "comment_count": 0, "vote_count": 0, "created_at": now, "updated_at": now,
    }
    doc.update(fields)
    return doc


def live(doc: dict[str, Any]) -> bool:
    """Whether the meeting's marks and running counters are documents of their own (true
    from creation until it is settled); a settled meeting embeds them, as history does."""
    return bool(doc.get("counts_live"))


def _split_marks(doc: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A live meeting given with an ``attendance`` map (fixtures): the meeting without it,
    and its marks as ``attendance`` documents. A settled one keeps its map."""
    if "attendance" not in doc or not live(doc):
        return doc, []
    meeting = {k: v for k, v in doc.items() if k != "attendance"}
    return meeting, [attendance_model.new_doc(doc["_id"], k, m) for k, m in (doc["attendance"] or {}).items()]


async def insert(db: AsyncDatabase, doc: dict[str, Any]) -> None:
    """Insert a meeting; the ``attendance`` map of a live ``doc`` goes to the marks (its
    ``counts`` stay)."""
    meeting, marks = _split_marks(doc)
    await db[COLLECTION].insert_one(meeting)
    await attendance_model.insert_many(db, marks)


async def insert_many(db: AsyncDatabase, docs: list[dict[str, Any]]) -> None:
    if docs:
        split = [_split_marks(d) for d in docs]
        await db[COLLECTION].insert_many([m for m, _ in split], ordered=False)
        await attendance_model.insert_many(db, [mark for _, marks in split for mark in marks])


# -- reading: counts with their running increments, marks on request ---------------------

def _project(fields: dict[str, int] | None) -> tuple[dict[str, int] | None, bool | list[str], bool]:
    """(the projection MongoDB gets, whose marks to attach: all (True) / these members /
    none, whether ``counts`` is read). ``attendance`` keys name marks: embedded ones come
    with the projection (settled meetings), the others are attached (live ones)."""
    if fields is None:
        return None, False, True
    including = any(fields.values())
    marks: bool | list[str] = False
    for key, value in fields.items():
        if value and marks is not True and (key == "attendance" or key.startswith("attendance.")):
            marks = True if key == "attendance" else [*(marks or []), key.split(".", 1)[1]]
    counts = bool(fields.get("counts")) if including else fields.get("counts", 1) != 0
    projection = dict(fields)
    if including and (counts or marks):
        projection["counts_live"] = 1
    return projection, marks, counts


async def _complete(db: AsyncDatabase, docs: list[dict[str, Any]], marks: bool | list[str],
                    counts: bool) -> list[dict[str, Any]]:
    """Add the running increments to ``counts`` and attach the marks asked for (live meetings)."""
    running = [d for d in docs if live(d)]
    extras = await attendance_model.counts_of(db, [d["_id"] for d in running if "counts" in d]) if counts else {}
    for doc in running:
        extra = extras.get(doc["_id"])
        if extra:
            doc["counts"] = {s: (doc["counts"] or {}).get(s, 0) + extra[s] for s in ATTENDANCE_STATUSES}
    if marks is True:
        for doc in running:
            doc["attendance"] = await attendance_model.of_meeting(db, doc["_id"])
    elif marks:
        found = await attendance_model.of_pairs(db, [(d["_id"], k) for d in running for k in marks])
        for doc in running:
            doc["attendance"] = {k: found[(doc["_id"], k)] for k in marks if (doc["_id"], k) in found}
    if marks:
        for doc in docs:
            doc.setdefault("attendance", {})
    return docs


async def _find(db: AsyncDatabase, query: dict[str, Any], fields: dict[str, int] | None,
                sort: tuple[str, int] | None = None, limit: int = 0) -> list[dict[str, Any]]:
    projection, marks, counts = _project(fields)
    cursor = db[COLLECTION].find(query, projection)
    if sort:
        cursor = cursor.sort(*sort)
    if limit:
        cursor = cursor.limit(limit)
    return await _complete(db, await cursor.to_list(), marks, counts)


async def get(db: AsyncDatabase, meeting_id: ObjectId,
              fields: dict[str, int] | None = None) -> dict[str, Any] | None:
    """One meeting (without marks unless ``fields`` names them: see the module docstring)."""
    projection, marks, counts = _project(fields)
    doc = await db[COLLECTION].find_one({"_id": meeting_id}, projection)
    return (await _complete(db, [doc], marks, counts))[0] if doc is not None else None


async def with_marks(db: AsyncDatabase, meeting: dict[str, Any]) -> dict[str, Any]:
    """``meeting`` (read with ``counts_live``) with its ``attendance`` map, every mark: the
    ledger, the board. A live meeting's come from their documents (oldest first)."""
    if live(meeting):
        meeting["attendance"] = await attendance_model.of_meeting(db, meeting["_id"])
    elif "attendance" not in meeting:
        meeting["attendance"] = ((await db[COLLECTION].find_one({"_id": meeting["_id"]}, {"attendance": 1}))
                                 or {}).get("attendance") or {}
    return meeting


async def by_ids(db: AsyncDatabase, meeting_ids: list[ObjectId], fields: dict[str, int]) -> list[dict[str, Any]]:
    """Meetings by id (the titles of an audit page); in no particular order."""
    if not meeting_ids:
        return []
    return await _find(db, {"_id": {"$in": meeting_ids}}, fields)


# What check-in relies on: a change of these goes through the check-in gate (below).
GATE_FIELDS = ("status", "start", "end")


def _gated(changes: dict[str, Any]) -> bool:
    return any(key.split(".")[0] in GATE_FIELDS
               for op in changes.values() if isinstance(op, dict) for key in op)


async def update_if(db: AsyncDatabase, meeting_id: ObjectId, expected: dict[str, Any],
                    changes: dict[str, Any]) -> dict[str, Any] | None:
    """Apply ``changes`` only while the meeting still matches ``expected``; the meeting after
    (its counts with their running increments, no marks). A change of its status, start or
    end closes the check-in gate before and opens a new one after (:func:`add_marks`)."""
    gated = _gated(changes)
    if gated:
        await attendance_model.turn_gate(db, meeting_id, closed=True)
    doc = await models.update_if(db[COLLECTION], meeting_id, expected, changes)
    if gated:
        await attendance_model.turn_gate(db, meeting_id, closed=False)
    return (await _complete(db, [doc], False, True))[0] if doc is not None else None


async def update_one_if(db: AsyncDatabase, meeting_id: ObjectId, expected: dict[str, Any],
                        changes: dict[str, Any]) -> bool:
    """Like :func:`update_if` without the read back."""
    gated = _gated(changes)
    if gated:
        await attendance_model.turn_gate(db, meeting_id, closed=True)
    result = await db[COLLECTION].update_one({"_id": meeting_id, **expected}, changes)
    if gated:
        await attendance_model.turn_gate(db, meeting_id, closed=False)
    return result.matched_count == 1


async def checkin_header(db: AsyncDatabase, meeting_id: ObjectId, fields: dict[str, int]) -> dict[str, Any] | None:
    """The meeting as check-in judges it, with ``gate``: the check-in gate's token read
    *before* the meeting, so that while the gate keeps it, the meeting's status, start
    and end are still those read (see :func:`add_marks`)."""
    gate = await attendance_model.gate(db, meeting_id)
    doc = await get(db, meeting_id, fields)
    if doc is not None:
        doc["gate"] = gate
    return doc


# -- marking ------------------------------------------------------------------------------

async def matches(db: AsyncDatabase, meeting_id: ObjectId, expected: dict[str, Any]) -> bool:
    """Whether the meeting (still) matches ``expected`` (one point lookup)."""
    return await db[COLLECTION].find_one({"_id": meeting_id, **expected}, {"_id": 1}) is not None


async def add_marks(db: AsyncDatabase, meeting_id: ObjectId, marks: dict[str, dict[str, Any]],
                    expected: dict[str, Any], gate: str | None = None) -> tuple[list[str], list[str]] | None:
    """First marks of members (``{member_id: mark}``) while the meeting matches ``expected``
    (e.g. open, and the start and end the rules were checked against, in a meeting read
    by :func:`checkin_header` whose ``gate`` is given).

    Returns (members newly marked, members already marked), or None when the
    meeting no longer matched: then nothing was added. In this order, so that
    a mark is never counted twice nor kept on a meeting that had changed:

    1. a roll naming the members, then the marks are inserted; the unique
       ``_id`` lets one insert per member win, across processes;
    2. the counters move by exactly the marks this call made, in an update
       conditional on the check-in gate still being ``gate``: every change of
       the meeting's status or times through this module closes the gate
       first, so an unchanged gate after the insert means the meeting was
       still as judged when the marks went in. A check-in never reads the
       meeting (a 5,000-member meeting's document costs ~3 ms to read);
    3. if the gate has turned (or there is none), the meeting is read *after*
       the insert instead: if it no longer matches, the marks just made are
       taken back (and the caller judges again); else they are counted.

    A process killed between 1 and 2 leaves marks without their increment: the
    settling after the meeting recounts (services.meetings.tally). A write to a
    meeting made around this module is seen by check-in within the header's
    life (``checkin.HEADER_TTL``).
    """
    new, taken = await attendance_model.claim(db, meeting_id, marks)
    if new:
        counts = attendance_model.tally(marks[k] for k in new)
        if not await attendance_model.add_counts_through(db, meeting_id, counts, gate):
            if not await matches(db, meeting_id, {**expected, "counts_live": True}):
                await attendance_model.release(db, meeting_id, {k: marks[k] for k in new})
                return None
            await attendance_model.add_counts(db, meeting_id, counts)
    return new, taken


async def mark_attendance(db: AsyncDatabase, meeting_id: ObjectId, member_id: ObjectId,
                          mark: dict[str, Any], *, statuses: tuple[str, ...] = OPEN_STATUSES,
                          now: datetime | None = None) -> bool:
    """Record the first attendance mark of a member; False if one exists or the meeting is
    not in ``statuses`` (see :func:`add_marks`). ``now`` is accepted for older callers."""
    done = await add_marks(db, meeting_id, {str(member_id): mark}, {"status": {"$in": list(statuses)}})
    return bool(done and done[0])


async def in_org_between(db: AsyncDatabase, org_id: ObjectId, start_from: datetime,
                         start_to: datetime, *, descending: bool = False, limit: int = 0,
                         extra_fields: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """A branch's meetings whose start falls in [start_from, start_to) (calendar, my meetings).

    ``extra_fields`` adds to the list fields, e.g. one member's ``attendance.<id>``.
    """
    return await _find(db, {"org_id": org_id, "start": {"$gte": start_from, "$lt": start_to}},
                       LIST_FIELDS | {"expected": 1} | (extra_fields or {}),
                       ("start", -1 if descending else 1), limit)


async def in_org_month(db: AsyncDatabase, org_id: ObjectId, month: str,
                       fields: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """A branch's meetings of one month (ledger, calendar)."""
    return await _find(db, {"org_id": org_id, "month": month}, fields or LIST_FIELDS)


async def in_scope_month(db: AsyncDatabase, scope_id: ObjectId, month: str,
                         fields: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Every meeting of a subtree in one month (use for small subtrees; roll-ups for large)."""
    return await _find(db, {"org_ancestors": scope_id, "month": month}, fields or LIST_FIELDS)


async def by_status_starting(db: AsyncDatabase, status: str, start_from: datetime,
                             start_to: datetime, fields: dict[str, int] | None = None,
                             limit: int = 500) -> list[dict[str, Any]]:
    """Meetings in one status starting in [start_from, start_to) (reminders, state scans)."""
    return await _find(db, {"status": status, "start": {"$gte": start_from, "$lt": start_to}},
                       fields or LIST_FIELDS, ("start", ASCENDING), limit)


async def finished_between(db: AsyncDatabase, since: datetime, until: datetime,
                           fields: dict[str, int], limit: int = 500) -> list[dict[str, Any]]:
    """Finished meetings whose finish falls in [since, until), earliest first (settling)."""
    cursor = (db[COLLECTION].find({"status": "finished", "finished_at": {"$gte": since, "$lt": until}}, fields)
              .sort("finished_at", ASCENDING).limit(limit))
    return await cursor.to_list()


def absent_count(doc: dict[str, Any]) -> int:
    """Expected members without any mark (never stored)."""
    counts = doc.get("counts") or {}
    marked = sum(counts.get(s, 0) for s in ATTENDANCE_STATUSES)
    return max(0, doc.get("expected_count", 0) - marked)


# -- files (GridFS) -------------------------------------------------------------------

def bucket(db: AsyncDatabase) -> AsyncGridFSBucket:
    return AsyncGridFSBucket(db, bucket_name=FILES_BUCKET)


async def put_file(db: AsyncDatabase, name: str, data: bytes, content_type: str,
                   metadata: dict[str, Any]) -> ObjectId:
    """Store ``data`` in GridFS; returns the file id."""
    stream = bucket(db).open_upload_stream(name, metadata={**metadata, "contentType": content_type})
    # Indexes exist (ensure_indexes); skip GridFS's own check, an unfiltered find
    # that SecantusDB answers with a collection scan.
    object.__setattr__(stream, "_ensured_index", True)
    try:
        await stream.write(data)
    except BaseException:
        await stream.abort()
        raise
    await stream.close()
    return stream._id


async def open_file(db: AsyncDatabase, file_id: ObjectId) -> AsyncGridOut | None:
    """An open GridFS file to stream with ``readchunk()``, or None if it is gone."""
    try:
        return await bucket(db).open_download_stream(file_id)
    except NoFile:
        return None


async def delete_file(db: AsyncDatabase, file_id: ObjectId) -> None:
    with contextlib.suppress(NoFile):
        await bucket(db).delete(file_id)
