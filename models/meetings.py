"""Collection ``meetings``: 三会一课 meetings with embedded attendance.

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
     attendance: {"<member_id>": {status, how, at, nonce?, by?}},
     counts: {present, online, excused},
     leave: {"<member_id>": {reason, status, at, decided_by?, decided_at?}},
     materials: [{file_id, name, size, content_type, uploaded_at}],
     minutes: {text, recorded_by, recorded_at, confirmed_by?, confirmed_at?, amendments} | None,
     qr: {oa_ticket?, oa_url?, oa_expires_at?, mp_code_file_id?, made_at?},
     comment_count, vote_count, created_at, updated_at}

Attendance is embedded because SecantusDB reads every document a query
matches: one document per meeting keeps a meeting's page at one point lookup
however many members attend. "Absent" is never stored.

Example::

    doc = new_meeting(org, "theme_day", "三月主题党日", start, end, organiser, tz, now=now)
    await insert(db, doc)
    await mark_attendance(db, doc["_id"], member_id, {"status": "present", ...})
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

# What lists and calendars show: never the attendance map of a 1,200-member meeting.
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
        "attendance": {}, "counts": {"present": 0, "online": 0, "excused": 0},
        "leave": {}, "materials": [], "minutes": None, "qr": {},
        "comment_count": 0, "vote_count": 0, "created_at": now, "updated_at": now,
    }
    doc.update(fields)
    return doc


async def insert(db: AsyncDatabase, doc: dict[str, Any]) -> None:
    await db[COLLECTION].insert_one(doc)


async def insert_many(db: AsyncDatabase, docs: list[dict[str, Any]]) -> None:
    if docs:
        await db[COLLECTION].insert_many(docs, ordered=False)


async def get(db: AsyncDatabase, meeting_id: ObjectId,
              fields: dict[str, int] | None = None) -> dict[str, Any] | None:
    return await db[COLLECTION].find_one({"_id": meeting_id}, fields)


async def update_if(db: AsyncDatabase, meeting_id: ObjectId, expected: dict[str, Any],
                    changes: dict[str, Any]) -> dict[str, Any] | None:
    """Apply ``changes`` only while the meeting still matches ``expected``."""
    return await models.update_if(db[COLLECTION], meeting_id, expected, changes)


async def update_one_if(db: AsyncDatabase, meeting_id: ObjectId, expected: dict[str, Any],
                        changes: dict[str, Any]) -> bool:
    """Like :func:`update_if` without the read back (hot paths: check-in)."""
    result = await db[COLLECTION].update_one({"_id": meeting_id, **expected}, changes)
    return result.matched_count == 1


async def mark_attendance(db: AsyncDatabase, meeting_id: ObjectId, member_id: ObjectId,
                          mark: dict[str, Any], *, statuses: tuple[str, ...] = OPEN_STATUSES,
                          now: datetime | None = None) -> bool:
    """Record the first attendance mark of a member; False if one exists or the meeting is closed.

    The filter carries "no mark yet" and the open statuses, so a retry, a
    racing scan or a cancelled meeting matches nothing, and the counter moves
    together with the mark.
    """
    key = f"attendance.{member_id}"
    changes: dict[str, Any] = {"$set": {key: mark}, "$inc": {f"counts.{mark['status']}": 1}}
    if now is not None:
        changes["$set"]["updated_at"] = now
    return await update_one_if(db, meeting_id,
                               {"status": {"$in": list(statuses)}, key: {"$exists": False}},
                               changes)


async def in_org_between(db: AsyncDatabase, org_id: ObjectId, start_from: datetime,
                         start_to: datetime, *, descending: bool = False, limit: int = 0,
                         extra_fields: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """A branch's meetings whose start falls in [start_from, start_to) (calendar, my meetings).

    ``extra_fields`` adds to the list fields, e.g. one member's ``attendance.<id>``.
    """
    cursor = db[COLLECTION].find({"org_id": org_id, "start": {"$gte": start_from, "$lt": start_to}},
                                 LIST_FIELDS | {"expected": 1} | (extra_fields or {}))
    cursor = cursor.sort("start", -1 if descending else 1)
    if limit:
        cursor = cursor.limit(limit)
    return await cursor.to_list()


async def in_org_month(db: AsyncDatabase, org_id: ObjectId, month: str,
                       fields: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """A branch's meetings of one month (ledger, calendar)."""
    cursor = db[COLLECTION].find({"org_id": org_id, "month": month}, fields or LIST_FIELDS)
    return await cursor.to_list()


async def in_scope_month(db: AsyncDatabase, scope_id: ObjectId, month: str,
                         fields: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Every meeting of a subtree in one month (use for small subtrees; roll-ups for large)."""
    cursor = db[COLLECTION].find({"org_ancestors": scope_id, "month": month}, fields or LIST_FIELDS)
    return await cursor.to_list()


async def by_status_starting(db: AsyncDatabase, status: str, start_from: datetime,
                             start_to: datetime, fields: dict[str, int] | None = None,
                             limit: int = 500) -> list[dict[str, Any]]:
    """Meetings in one status starting in [start_from, start_to) (reminders, state scans)."""
    cursor = (db[COLLECTION].find({"status": status, "start": {"$gte": start_from, "$lt": start_to}},
                                  fields or LIST_FIELDS)
              .sort("start", ASCENDING).limit(limit))
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
