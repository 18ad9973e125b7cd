"""The members' side: their meetings, online attendance, and leave (请假) with its decision.

Marks are documents of their own (``models.attendance``); reading a meeting
with the projection ``attendance.<member_id>`` gets that member's mark as
``meeting["attendance"]`` (``models.meetings``), so :func:`member_state` and
the comment and vote rules read a meeting as before. A mark is made first and
counted after (one winner each); leave lives in the meeting. The two writes of
a leave decision (the request's status, then the excused mark) are made in the
order whose half-done state the settling after the meeting repairs
(:mod:`.tally`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from cachetools import TTLCache

from models import attendance as attendance_model
from models import meetings as meetings_model
from wxbackend.context import AppContext
from wxbackend.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from wxbackend.services.accounts import audit
from wxbackend.services.accounts.access import Actor
from wxbackend.services.meetings import checkin
from wxbackend.services.meetings.planning import view
from wxbackend.services.meetings.rules import (
    LEAVE_REASON_LIMIT,
    MAX_DURATION,
    checkin_opens_at,
    parse_id,
)

# -- members' side ---------------------------------------------------------------------

async def for_member(ctx: AppContext, member: dict[str, Any], meeting_id: str | ObjectId,
                     fields: dict[str, int] | None = None) -> dict[str, Any]:
    """A published meeting the member may see: of their branch, and they are invited to it.

    The one access rule of the phone side (details, materials; comments and
    votes use it too). Another branch's meeting is ``out_of_scope``.
    """
    meeting = await meetings_model.get(ctx.db, parse_id(meeting_id), fields)
    if meeting is None or meeting["status"] == "draft":
        raise NotFound("meeting_not_found", "会议不存在")
    if member["org_id"] != meeting["org_id"]:
        raise Forbidden("out_of_scope", "这不是您所在党支部的会议")
    if member["_id"] not in set(meeting.get("expected") or ()) and not meeting.get("allow_branch_members"):
        raise Forbidden("out_of_scope", "您不在本次会议的参会人员名单中")
    return meeting


MEMBER_FIELDS = {"attendance": 0, "leave": 0}


async def member_meetings(ctx: AppContext, member: dict[str, Any], when: str, *,
                          before: datetime | None = None, limit: int = 20,
                          now: datetime | None = None) -> list[dict[str, Any]]:
    """The member's upcoming (soonest first) or past (latest first) meetings."""
    now = now or ctx.clock.now()
    mine = {f"attendance.{member['_id']}": 1, f"leave.{member['_id']}": 1}
    if when == "upcoming":
        rows = await meetings_model.in_org_between(ctx.db, member["org_id"], now - MAX_DURATION,
                                                   now + timedelta(days=366), extra_fields=mine)
        rows = [m for m in rows if m["end"] >= now]
    else:
        upper = min(before or now, now)
        rows = await meetings_model.in_org_between(ctx.db, member["org_id"], upper - timedelta(days=366),
                                                   upper, descending=True, extra_fields=mine)
        rows = [m for m in rows if m["end"] < now]
    return [m for m in rows if m["status"] != "draft"
            and (member["_id"] in set(m.get("expected") or ()) or m.get("allow_branch_members"))][:limit]


# A roll is written (its ObjectId stamped) before its marks and counted after; all within this.
LAG = timedelta(seconds=10)
# Read every mark again at least this often (seconds), whatever the counters say: what a
# process killed between a mark and its count left unseen appears then.
FULL_EVERY = 300.0
MARKS_KEPT = 50


@dataclass
class _Seen:
    marks: dict[str, dict[str, Any]]
    rev: int
    removed: int
    read_at: datetime       # when the last read began (clock time)
    full_at: float          # when the last full read began (monotonic)


class SeenMarks:
    """A process's marks per meeting as it last read them (see :func:`with_marks`)."""

    def __init__(self) -> None:
        self.seen: TTLCache[ObjectId, _Seen] = TTLCache(MARKS_KEPT, 15 * 60)


async def current_marks(ctx: AppContext, meeting_id: ObjectId) -> dict[str, dict[str, Any]]:
    """Every mark of the meeting, ``{member_id: mark}``, reading only what changed since this
    process last looked (shared: do not change it)."""
    cache = ctx.state(SeenMarks).seen
    rev, removed = await attendance_model.revision(ctx.db, meeting_id)  # before the marks: see below
    now, mono = ctx.clock.now(), time.monotonic()
    seen = cache.get(meeting_id)
    if (seen is None or removed != seen.removed or rev < seen.rev or mono - seen.full_at > FULL_EVERY):
        marks = await attendance_model.of_meeting(ctx.db, meeting_id)
        cache[meeting_id] = _Seen(marks, rev, removed, now, mono)
        return marks
    if rev != seen.rev:
        # A round counted after we read its rev is read next time (its rev moves after its marks).
        since = ctx.clock.id_at(seen.read_at - LAG)
        seen.marks.update(await attendance_model.of_meeting(ctx.db, meeting_id, since=since))
        seen.rev, seen.read_at = rev, now
    return seen.marks


async def with_marks(ctx: AppContext, meeting: dict[str, Any]) -> dict[str, Any]:
    """``meeting`` (read with ``counts_live``) with its ``attendance`` map: every mark (the live
    board, the secretary's page, a reminder to those still to come).

    A 5,000-member meeting's marks cost SecantusDB ~0.2 s to read, and the
    board asks every 3 s, during the very rush it shows. So each process keeps
    the marks it read per meeting and reads again only what changed: the
    running counters' ``rev`` moves with every counted change (unchanged:
    nothing to read), new and replaced marks have a roll written with them
    (read the members of the rolls written since the last look, less ``LAG``),
    and removals move ``removed`` (then, and every ``FULL_EVERY``, all marks
    are read again: ~0.15 ms of SecantusDB a mark).
    """
    if not meetings_model.live(meeting):  # settled: the marks are in the meeting
        return await meetings_model.with_marks(ctx.db, meeting)
    meeting["attendance"] = dict(await current_marks(ctx, meeting["_id"]))
    return meeting


def member_state(meeting: dict[str, Any], member_id: ObjectId) -> str | None:
    """present | online | excused | leave_pending | leave_refused | None, from one member's view."""
    mark = (meeting.get("attendance") or {}).get(str(member_id))
    if mark:
        return mark["status"]
    leave = (meeting.get("leave") or {}).get(str(member_id))
    return f"leave_{leave['status']}" if leave and leave["status"] != "withdrawn" else None


async def my_marks(ctx: AppContext, member: dict[str, Any],
                   meeting_ids: list[ObjectId]) -> dict[ObjectId, dict[str, Any]]:
    """The member's own attendance mark and leave request on each meeting (point lookups)."""
    key = str(member["_id"])
    found = {}
    for meeting_id in meeting_ids:
        doc = await meetings_model.get(ctx.db, meeting_id, {f"attendance.{key}": 1, f"leave.{key}": 1})
        if doc is not None:
            found[meeting_id] = {"attendance": (doc.get("attendance") or {}).get(key),
                                 "leave": (doc.get("leave") or {}).get(key)}
    return found


async def join_online(ctx: AppContext, member: dict[str, Any], meeting_id: str | ObjectId,
                      now: datetime | None = None) -> dict[str, Any]:
    """The member opened the meeting in the mini-program during it: online attendance.

    Only a meeting held online too (it has an online link) and only while it
    runs: otherwise an online mark would be attendance without being anywhere,
    and it unlocks comments and votes like presence does.
    Returns ``{"recorded": bool, "mark": {...}, "online_link": ...}``; a member
    already marked (present, excused, online) keeps that mark.
    """
    now = now or ctx.clock.now()
    meeting = await for_member(ctx, member, meeting_id, dict(checkin.HEADER_FIELDS))
    if meeting["status"] == "cancelled":
        raise DomainError("meeting_cancelled", f"会议“{meeting['title']}”已取消")
    if not (meeting.get("online_link") or "").strip():
        raise DomainError("meeting_not_online", "本次会议没有线上参会方式，请到会场扫码签到")
    if not meeting["start"] <= now <= meeting["end"] or meeting["status"] not in meetings_model.OPEN_STATUSES:
        raise DomainError("meeting_not_in_progress", "会议不在进行中，无法线上参会")
    mark = {"status": "online", "how": "online", "at": now}
    recorded = await meetings_model.mark_attendance(ctx.db, meeting["_id"], member["_id"], mark)
    if not recorded:
        mark = (await my_marks(ctx, member, [meeting["_id"]]))[meeting["_id"]]["attendance"] or mark
    return {"recorded": recorded, "mark": mark, "online_link": meeting.get("online_link") or ""}


# -- leave (请假) ------------------------------------------------------------------------

async def request_leave(ctx: AppContext, member: dict[str, Any], meeting_id: str | ObjectId,
                        reason: str, now: datetime | None = None) -> dict[str, Any]:
    """Ask for leave before the start; a pending or approved request is not repeated."""
    now = now or ctx.clock.now()
    reason = (reason or "").strip()
    if not reason or len(reason) > LEAVE_REASON_LIMIT:
        raise InvalidInput("leave_reason_required", f"请填写请假事由（不超过{LEAVE_REASON_LIMIT}字）")
    meeting = await for_member(ctx, member, meeting_id, dict(checkin.HEADER_FIELDS))
    if meeting["status"] == "cancelled":
        raise DomainError("meeting_cancelled", f"会议“{meeting['title']}”已取消")
    if meeting["start"] <= now or meeting["status"] not in meetings_model.OPEN_STATUSES:
        raise DomainError("leave_too_late", "会议已开始，不能再请假")
    mid = str(member["_id"])
    request = {"reason": reason, "status": "pending", "at": now, "name": member["name"]}
    # A member already marked (checked in, online) has no leave to ask for.
    done = await attendance_model.get(ctx.db, meeting["_id"], mid) is None and await meetings_model.update_one_if(
        ctx.db, meeting["_id"],
        {"status": {"$in": list(meetings_model.OPEN_STATUSES)}, "start": {"$gt": now},
         f"leave.{mid}.status": {"$nin": ["pending", "approved"]}},
        {"$set": {f"leave.{mid}": request}})
    if not done:
        marks = (await my_marks(ctx, member, [meeting["_id"]]))[meeting["_id"]]
        if marks["leave"] and marks["leave"]["status"] in ("pending", "approved"):
            return marks["leave"]  # the same request again: the same answer
        if marks["attendance"]:
            raise Conflict("already_checked_in", "您已签到，无需请假")
        raise Conflict("leave_not_possible", "会议状态刚刚变化，请刷新后重试")
    return request


async def withdraw_leave(ctx: AppContext, member: dict[str, Any], meeting_id: str | ObjectId,
                         now: datetime | None = None) -> dict[str, Any]:
    """Take a leave request back before the start; an approved one stops counting as excused.

    Pending or approved, each tried as one conditional update (the secretary
    may decide in between); withdrawing twice answers the same. An approved
    one: the request first, then the excused mark the approval made (and its
    count); a member who came after all keeps the check-in.
    """
    now = now or ctx.clock.now()
    meeting = await for_member(ctx, member, meeting_id, dict(checkin.HEADER_FIELDS))
    mid = str(member["_id"])
    for status in ("pending", "approved"):
        if status == "approved":
            mark = await attendance_model.get(ctx.db, meeting["_id"], mid)
            if mark is not None and mark.get("how") != "leave":
                continue  # here after all: the leave is moot, and not withdrawable
        expected: dict[str, Any] = {"status": {"$in": list(meetings_model.OPEN_STATUSES)},
                                    "start": {"$gt": now}, f"leave.{mid}.status": status}
        changes: dict[str, Any] = {"$set": {f"leave.{mid}.status": "withdrawn",
                                            f"leave.{mid}.withdrawn_at": now}}
        if await meetings_model.update_one_if(ctx.db, meeting["_id"], expected, changes):
            if status == "approved" and await attendance_model.remove_if(
                    ctx.db, meeting["_id"], mid, {"status": "excused", "how": "leave"}):
                await attendance_model.add_counts(ctx.db, meeting["_id"], {"excused": -1, "removed": 1})
            return (await my_marks(ctx, member, [meeting["_id"]]))[meeting["_id"]]["leave"]
    leave = (await my_marks(ctx, member, [meeting["_id"]]))[meeting["_id"]]["leave"]
    if leave is not None and leave["status"] == "withdrawn":
        return leave  # withdrawn already: the same answer
    if leave is None:
        raise NotFound("leave_not_found", "您没有提交请假申请")
    if meeting["start"] <= now or meeting["status"] not in meetings_model.OPEN_STATUSES:
        raise DomainError("leave_too_late", "会议已开始，不能撤回请假")
    raise Conflict("leave_not_withdrawable", "该请假申请已处理或您已签到，不能撤回")


async def decide_leave(ctx: AppContext, actor: Actor, meeting_id: str | ObjectId,
                       member_id: str | ObjectId, approve: bool) -> dict[str, Any]:
    """The secretary approves (-> excused, counted) or refuses a pending request.

    Approval: the request first (one winner), then the excused mark and its
    count; a member marked meanwhile (here after all) keeps that mark.
    """
    meeting = await view(ctx, actor, meeting_id)
    actor.require("meeting.manage", meeting["org_ancestors"])
    try:
        mid = str(ObjectId(str(member_id)))
    except InvalidId:
        raise NotFound("leave_not_found", "找不到该请假申请") from None
    now = ctx.clock.now()
    expected: dict[str, Any] = {f"leave.{mid}.status": "pending"}
    changes: dict[str, Any] = {"$set": {f"leave.{mid}.status": "approved" if approve else "refused",
                                        f"leave.{mid}.decided_by": actor.name,
                                        f"leave.{mid}.decided_at": now}}
    marked = approve and await attendance_model.get(ctx.db, meeting["_id"], mid) is not None
    if approve:
        expected["status"] = {"$in": list(meetings_model.OPEN_STATUSES)}
    decided = None if marked else await meetings_model.update_if(ctx.db, meeting["_id"], expected, changes)
    if decided is None:
        raise Conflict("leave_not_pending", "该请假申请已处理、已撤回，或该党员已签到")
    if approve:
        excused = {"status": "excused", "how": "leave", "at": now, "by": actor.name}
        new, _ = await attendance_model.claim(ctx.db, meeting["_id"], {mid: excused})
        if new:
            await attendance_model.add_counts(ctx.db, meeting["_id"], {"excused": 1})
    request = decided["leave"][mid]
    await audit.record(ctx, actor, "meeting.leave_" + ("approve" if approve else "refuse"), "meeting",
                       meeting["_id"], meeting["title"], meeting["org_ancestors"],
                       {"member_id": mid, "member": request.get("name", "")})
    return request


def leave_requests(meeting: dict[str, Any], names: dict[str, str]) -> list[dict[str, Any]]:
    """Leave requests, pending first, for the secretary's page."""
    rows = [{"member_id": mid, "name": names.get(mid, r.get("name", "")), **r}
            for mid, r in (meeting.get("leave") or {}).items()]
    return sorted(rows, key=lambda r: (r["status"] != "pending", r["at"]))


def detail_fields(member_id: ObjectId) -> dict[str, int]:
    """A meeting as one member may read it: without the other members' marks and requests."""
    return meetings_model.LIST_FIELDS | {"expected": 1, "agenda": 1, "materials": 1, "rotating_only": 1,
                                         "geo": 1, f"attendance.{member_id}": 1, f"leave.{member_id}": 1}


def can_check_in(ctx: AppContext, meeting: dict[str, Any], member_id: ObjectId, now: datetime) -> bool:
    """Whether the member's check-in is open now: the meeting is on, its window open, not yet present."""
    return (meeting["status"] in meetings_model.OPEN_STATUSES
            and checkin_opens_at(ctx, meeting) <= now <= meeting["end"]
            and member_state(meeting, member_id) != "present")
