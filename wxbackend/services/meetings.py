"""Meetings (三会一课): plan, publish, change, cancel, start, finish, minutes, materials, leave.

State machine (docs/MEETINGS-DESIGN.md)::

    draft --publish--> planned --start--> in_progress --finish--> finished
                          |                    |                      |
                          +--------cancel------+----------------------+--> cancelled

``in_progress`` is *stored* only by an action: the secretary's 开始会议, or the
cron job :func:`start_due` once the start time has passed. Pages and the API
show a published meeting whose start has passed as 进行中 at once (derived
from the time by :func:`display_status`), so nothing waits for the cron.
Check-in, leave and online joining accept both ``planned`` and ``in_progress``.

Every step is a conditional update with the expected status in the filter, so
a retried or racing request changes nothing twice. Finishing calls
``compliance.meeting_finished`` exactly once, after the update succeeded;
cancelling a finished meeting calls ``compliance.meeting_unfinished``.

Example::

    meeting = await create(ctx, actor, branch_id, {"type": "theme_day", "title": "三月主题党日",
                           "start": start, "end": end, "place": "党员活动室"})
    await publish(ctx, actor, meeting["_id"])      # notifies the expected attendees
    await finish(ctx, actor, meeting["_id"])
    await record_minutes(ctx, actor, meeting["_id"], "会议记录……")
    await confirm_minutes(ctx, actor, meeting["_id"])
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId

from models import meetings as meetings_model
from models import members as members_model
from models.enums import MEETING_STATUSES, MEETING_TYPES
from wxbackend import jobs
from wxbackend.clock import SHANGHAI
from wxbackend.context import AppContext
from wxbackend.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from wxbackend.services import audit, checkin, meeting_notices, orgs
from wxbackend.services.access import Actor
from wxbackend.services.members import FieldError

EDITABLE = ("draft", "planned")
CANCELLABLE = ("draft", "planned", "in_progress", "finished")
TEXT_LIMITS = {"title": 60, "topic": 200, "agenda": 2000, "place": 100, "online_link": 500}
MINUTES_LIMIT = 20000
LEAVE_REASON_LIMIT = 200
MAX_DURATION = timedelta(days=3)
FIELD_LABELS = {"title": "会议名称", "topic": "会议主题", "agenda": "议程", "place": "地点",
                "online_link": "线上会议链接", "type": "会议类型", "start": "开始时间", "end": "结束时间",
                "reminder_minutes": "提前提醒", "audience": "参会范围", "group_id": "党小组",
                "member_ids": "参会党员"}
# Fields whose change is worth telling the attendees about.
NOTICE_FIELDS = ("start", "end", "place", "online_link")


def _compliance() -> Any:
    """The compliance service (imported late: it builds on this module)."""
    from wxbackend.services import compliance

    return compliance


def parse_id(raw: str | ObjectId) -> ObjectId:
    return checkin.parse_meeting_id(raw)


async def get_meeting(ctx: AppContext, meeting_id: str | ObjectId) -> dict[str, Any]:
    meeting = await meetings_model.get(ctx.db, parse_id(meeting_id))
    if meeting is None:
        raise NotFound("meeting_not_found", "会议不存在")
    return meeting


async def view(ctx: AppContext, actor: Actor, meeting_id: str | ObjectId) -> dict[str, Any]:
    """A meeting the actor may see (management side)."""
    meeting = await get_meeting(ctx, meeting_id)
    actor.require("meeting.view", meeting["org_ancestors"])
    return meeting


def display_status(meeting: dict[str, Any], now: datetime) -> str:
    """The status people see: a published meeting under way is 进行中 before any cron."""
    status = meeting["status"]
    if status == "planned" and meeting["start"] <= now:
        return "in_progress"
    return status


def checkin_opens_at(ctx: AppContext, meeting: dict[str, Any]) -> datetime:
    return meeting["start"] - timedelta(minutes=ctx.settings.meetings.checkin_open_minutes)


def status_label(meeting: dict[str, Any], now: datetime) -> str:
    status = display_status(meeting, now)
    if status == "in_progress" and meeting["end"] < now:
        return "待结束"
    return MEETING_STATUSES[status]


# -- planning -------------------------------------------------------------------------

def raise_field_errors(errors: list[FieldError]) -> None:
    if errors:
        text = "；".join(f"{FIELD_LABELS.get(e.field, e.field)}：{e.message}" for e in errors)
        raise InvalidInput("invalid_meeting", text, details=[e.as_dict() for e in errors])


def _text(raw: dict[str, Any], name: str, errors: list[FieldError], required: bool = False) -> str:
    value = str(raw.get(name) or "").strip()
    if required and not value:
        errors.append(FieldError(name, "必填"))
    elif len(value) > TEXT_LIMITS[name]:
        errors.append(FieldError(name, f"不超过{TEXT_LIMITS[name]}个字"))
    return value


def _time(raw: dict[str, Any], name: str, errors: list[FieldError]) -> datetime | None:
    value = raw.get(name)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            value = None
    if not isinstance(value, datetime):
        errors.append(FieldError(name, "请填写有效的时间"))
        return None
    if value.tzinfo is None:  # a form's datetime-local is Shanghai time
        value = value.replace(tzinfo=SHANGHAI)
    return value.astimezone(UTC).replace(microsecond=0)


def validate_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """Clean the planning fields or raise InvalidInput listing each bad field."""
    errors: list[FieldError] = []
    clean: dict[str, Any] = {name: _text(raw, name, errors, required=(name == "title"))
                             for name in TEXT_LIMITS}
    clean["type"] = raw.get("type")
    if clean["type"] not in MEETING_TYPES:
        errors.append(FieldError("type", "请选择会议类型"))
    start, end = _time(raw, "start", errors), _time(raw, "end", errors)
    if start and end and not start < end <= start + MAX_DURATION:
        errors.append(FieldError("end", "结束时间应晚于开始时间，且会议不超过3天"))
    clean["start"], clean["end"] = start, end
    link = clean["online_link"]
    if link and not link.startswith(("https://", "http://")):
        errors.append(FieldError("online_link", "线上会议链接应以 https:// 开头"))
    clean["allow_branch_members"] = bool(raw.get("allow_branch_members"))
    reminder = raw.get("reminder_minutes")
    try:
        clean["reminder_minutes"] = int(reminder) if reminder not in (None, "") else None
    except (TypeError, ValueError):
        clean["reminder_minutes"] = -1
    if clean["reminder_minutes"] is not None and not 0 < clean["reminder_minutes"] <= 24 * 60:
        errors.append(FieldError("reminder_minutes", "提醒时间应为1-1440分钟"))
    clean["audience"] = _audience(raw, errors)
    raise_field_errors(errors)
    return clean


def _audience(raw: dict[str, Any], errors: list[FieldError]) -> dict[str, Any]:
    kind = raw.get("audience") or "branch"
    if kind not in meetings_model.AUDIENCE_KINDS:
        errors.append(FieldError("audience", "参会范围无效"))
        return {"kind": "branch"}
    audience: dict[str, Any] = {"kind": kind}
    try:
        if kind == "group":
            audience["group_id"] = ObjectId(str(raw.get("group_id") or ""))
        if kind == "list":
            ids = raw.get("member_ids") or []
            ids = ids.replace(",", " ").split() if isinstance(ids, str) else ids
            audience["member_ids"] = list(dict.fromkeys(ObjectId(str(i)) for i in ids))
            if not audience["member_ids"]:
                errors.append(FieldError("member_ids", "请选择参会党员"))
    except (InvalidId, TypeError):
        errors.append(FieldError("group_id" if kind == "group" else "member_ids", "取值无效"))
    return audience


async def _branch_of(ctx: AppContext, org_id: str | ObjectId) -> dict[str, Any]:
    """Meetings belong to a branch; a 党小组's meeting belongs to its branch."""
    org = await orgs.get(ctx, orgs.parse_id(org_id))
    if org["type"] == "group":
        org = await orgs.get(ctx, org["parent_id"])
    if org["type"] != "branch" or org["status"] != "active":
        raise DomainError("not_a_branch", "只有正常状态的党支部可以组织三会一课")
    return org


async def create(ctx: AppContext, actor: Actor, org_id: str | ObjectId,
                 raw: dict[str, Any]) -> dict[str, Any]:
    """A draft meeting of a branch (not visible to members until published)."""
    org = await _branch_of(ctx, org_id)
    actor.require("meeting.manage", org["org_ancestors"])
    clean = validate_fields(raw)
    await _check_audience(ctx, org, clean["audience"])
    organiser = {"user_id": actor.id, "name": actor.name}
    title, start, end = clean.pop("title"), clean.pop("start"), clean.pop("end")
    doc = meetings_model.new_meeting(org, clean.pop("type"), title, start, end, organiser,
                                     SHANGHAI, now=ctx.clock.now(), **clean)
    await meetings_model.insert(ctx.db, doc)
    await audit.record(ctx, actor, "meeting.create", "meeting", doc["_id"], title, doc["org_ancestors"])
    return doc


async def _check_audience(ctx: AppContext, org: dict[str, Any], audience: dict[str, Any]) -> None:
    if audience["kind"] == "group":
        group = await orgs.get(ctx, audience["group_id"])
        if group.get("parent_id") != org["_id"] or group["type"] != "group":
            raise InvalidInput("group_invalid", "请选择本支部的党小组")
    if audience["kind"] == "committee" and not _committee_ids(org):
        raise InvalidInput("no_committee", "本支部尚未设立支部委员会")


def _committee_ids(org: dict[str, Any]) -> list[ObjectId]:
    ids = [c["member_id"] for c in org.get("committee") or [] if c.get("member_id")]
    secretary = (org.get("secretary") or {}).get("member_id")
    return list(dict.fromkeys(([secretary] if secretary else []) + ids))


async def expected_members(ctx: AppContext, org: dict[str, Any],
                           audience: dict[str, Any]) -> list[ObjectId]:
    """The active members the audience means, materialised at publication."""
    fields = {"state": 1, "group_id": 1, "org_id": 1}
    rows = await members_model.in_orgs(ctx.db, [org["_id"]], fields)
    active = [m for m in rows if m.get("state") == "active"]
    kind = audience["kind"]
    if kind == "group":
        return [m["_id"] for m in active if m.get("group_id") == audience["group_id"]]
    if kind == "committee":
        wanted = set(_committee_ids(org))
    elif kind == "list":
        wanted = set(audience["member_ids"])
    else:
        return [m["_id"] for m in active]
    return [m["_id"] for m in active if m["_id"] in wanted]


async def update(ctx: AppContext, actor: Actor, meeting_id: str | ObjectId,
                 raw: dict[str, Any]) -> dict[str, Any]:
    """Edit a draft or published meeting; a published one re-notifies on time/place changes."""
    meeting = await view(ctx, actor, meeting_id)
    actor.require("meeting.manage", meeting["org_ancestors"])
    if meeting["status"] not in EDITABLE:
        raise Conflict("meeting_not_editable", "会议已开始、结束或取消，不能再修改")
    org = await _branch_of(ctx, meeting["org_id"])
    clean = validate_fields(raw)
    await _check_audience(ctx, org, clean["audience"])
    changes = {**clean, "month": meetings_model.month_of(clean["start"], SHANGHAI),
               "updated_at": ctx.clock.now()}
    if meeting["status"] == "planned":
        changes["expected"] = await expected_members(ctx, org, clean["audience"])
        changes["expected_count"] = len(changes["expected"])
    if clean["start"] != meeting["start"]:
        changes["reminded_at"] = None
    updated = await meetings_model.update_if(ctx.db, meeting["_id"],
                                             {"status": meeting["status"], "updated_at": meeting["updated_at"]},
                                             {"$set": changes})
    if updated is None:
        raise Conflict("meeting_changed", "会议刚被他人修改，请刷新后重试")
    checkin.forget(ctx, meeting["_id"])
    changed = [f for f in NOTICE_FIELDS if meeting.get(f) != updated.get(f)]
    await audit.record(ctx, actor, "meeting.update", "meeting", meeting["_id"], updated["title"],
                       updated["org_ancestors"], {"fields": sorted(k for k in clean if meeting.get(k) != clean[k])})
    if updated["status"] == "planned" and changed:
        await meeting_notices.send(ctx, updated, "meeting_changed")
    return updated


async def publish(ctx: AppContext, actor: Actor, meeting_id: str | ObjectId) -> dict[str, Any]:
    """draft -> planned: fix the expected attendees and notify each of them."""
    meeting = await view(ctx, actor, meeting_id)
    actor.require("meeting.manage", meeting["org_ancestors"])
    now = ctx.clock.now()
    if meeting["status"] == "draft" and meeting["end"] <= now:
        raise DomainError("meeting_in_past", "会议结束时间已过，请先修改时间再发布")
    org = await _branch_of(ctx, meeting["org_id"])
    expected = await expected_members(ctx, org, meeting["audience"])
    if not expected:
        raise DomainError("no_attendees", "参会范围内没有在册党员")
    published = await meetings_model.update_if(
        ctx.db, meeting["_id"], {"status": "draft"},
        {"$set": {"status": "planned", "published_at": now, "updated_at": now,
                  "expected": expected, "expected_count": len(expected)}})
    if published is None:
        raise Conflict("meeting_not_draft", "会议已发布或已取消")
    checkin.forget(ctx, meeting["_id"])
    await audit.record(ctx, actor, "meeting.publish", "meeting", meeting["_id"], meeting["title"],
                       meeting["org_ancestors"], {"expected": len(expected)})
    await meeting_notices.send(ctx, published, "meeting_published")
    return published


async def cancel(ctx: AppContext, actor: Actor, meeting_id: str | ObjectId,
                 reason: str = "") -> dict[str, Any]:
    """Cancel a meeting (a finished one too, e.g. recorded by mistake); notifies if published."""
    meeting = await view(ctx, actor, meeting_id)
    actor.require("meeting.manage", meeting["org_ancestors"])
    if meeting["status"] not in CANCELLABLE:
        raise Conflict("meeting_cancelled", "会议已取消")
    if (meeting.get("minutes") or {}).get("confirmed_at"):
        raise Conflict("minutes_confirmed", "会议记录已确认，不能取消该会议")
    now = ctx.clock.now()
    cancelled = await meetings_model.update_if(
        ctx.db, meeting["_id"], {"status": meeting["status"]},
        {"$set": {"status": "cancelled", "cancelled_at": now, "updated_at": now,
                  "cancel_reason": reason.strip()[:200]}})
    if cancelled is None:
        raise Conflict("meeting_changed", "会议状态刚刚变化，请刷新后重试")
    checkin.forget(ctx, meeting["_id"])
    if meeting["status"] == "finished":
        await _compliance().meeting_unfinished(ctx, cancelled)
    await audit.record(ctx, actor, "meeting.cancel", "meeting", meeting["_id"], meeting["title"],
                       meeting["org_ancestors"], {"from": meeting["status"], "reason": reason[:200]})
    if meeting["status"] in ("planned", "in_progress"):
        await meeting_notices.send(ctx, cancelled, "meeting_cancelled")
    return cancelled


async def start(ctx: AppContext, actor: Actor, meeting_id: str | ObjectId) -> dict[str, Any]:
    """planned -> in_progress (开始会议)."""
    meeting = await view(ctx, actor, meeting_id)
    actor.require("meeting.manage", meeting["org_ancestors"])
    now = ctx.clock.now()
    started = await meetings_model.update_if(ctx.db, meeting["_id"], {"status": "planned"},
                                             {"$set": {"status": "in_progress", "started_at": now,
                                                       "updated_at": now}})
    if started is None:
        raise Conflict("meeting_not_planned", "只有已发布、未开始的会议可以开始")
    checkin.forget(ctx, meeting["_id"])
    await audit.record(ctx, actor, "meeting.start", "meeting", meeting["_id"], meeting["title"],
                       meeting["org_ancestors"])
    return started


async def start_due(ctx: AppContext, now: datetime | None = None, limit: int = 500) -> int:
    """Cron: published meetings whose start has passed become in_progress. Returns how many."""
    now = now or ctx.clock.now()
    due = await meetings_model.by_status_starting(ctx.db, "planned", now - timedelta(days=7), now,
                                                  {"status": 1}, limit=limit)
    moved = 0
    for brief in due:
        if await meetings_model.update_one_if(ctx.db, brief["_id"], {"status": "planned"},
                                              {"$set": {"status": "in_progress", "started_at": now}}):
            moved += 1
    return moved


@jobs.cron_job("meeting_reminders", "meeting_reminders", timeout=120)
async def every_minute(ctx: AppContext) -> dict[str, int]:
    """Cron: start what has started, remind what is about to (each step claimed, so once)."""
    return {"started": await start_due(ctx), "reminded": await meeting_notices.send_due_reminders(ctx)}


async def finish(ctx: AppContext, actor: Actor, meeting_id: str | ObjectId) -> dict[str, Any]:
    """planned|in_progress -> finished; tells compliance once."""
    meeting = await view(ctx, actor, meeting_id)
    actor.require("meeting.manage", meeting["org_ancestors"])
    now = ctx.clock.now()
    if meeting["status"] in meetings_model.OPEN_STATUSES and meeting["start"] > now:
        raise DomainError("meeting_not_started", "会议尚未开始，不能结束")
    done = await meetings_model.update_if(
        ctx.db, meeting["_id"], {"status": {"$in": list(meetings_model.OPEN_STATUSES)}},
        {"$set": {"status": "finished", "finished_at": now, "updated_at": now}})
    if done is None:
        raise Conflict("meeting_not_open", "会议已结束或已取消")
    checkin.forget(ctx, meeting["_id"])
    await _compliance().meeting_finished(ctx, done)
    await audit.record(ctx, actor, "meeting.finish", "meeting", meeting["_id"], done["title"],
                       done["org_ancestors"], {"present": done["counts"]["present"]})
    return done


# -- minutes (会议记录) ---------------------------------------------------------------

def _minutes_text(text: str) -> str:
    text = (text or "").strip()
    if not text:
        raise InvalidInput("minutes_empty", "会议记录不能为空")
    if len(text) > MINUTES_LIMIT:
        raise InvalidInput("minutes_too_long", f"会议记录不超过{MINUTES_LIMIT}字")
    return text


async def record_minutes(ctx: AppContext, actor: Actor, meeting_id: str | ObjectId,
                         text: str) -> dict[str, Any]:
    """Write or rewrite the minutes until they are confirmed."""
    meeting = await view(ctx, actor, meeting_id)
    actor.require("meeting.manage", meeting["org_ancestors"])
    text = _minutes_text(text)
    now = ctx.clock.now()
    if display_status(meeting, now) not in ("in_progress", "finished"):
        raise DomainError("meeting_not_held", "会议召开后才能填写会议记录")
    minutes = {"text": text, "recorded_by": actor.name, "recorded_at": now, "amendments": []}
    updated = await meetings_model.update_if(
        ctx.db, meeting["_id"],
        {"status": {"$in": ["planned", "in_progress", "finished"]},
         "minutes.confirmed_at": {"$exists": False}},
        {"$set": {"minutes": minutes, "updated_at": now}})
    if updated is None:
        raise Conflict("minutes_confirmed", "会议记录已确认，只能以修正方式补充")
    await audit.record(ctx, actor, "meeting.minutes", "meeting", meeting["_id"], meeting["title"],
                       meeting["org_ancestors"], {"chars": len(text)})
    return updated


async def confirm_minutes(ctx: AppContext, actor: Actor, meeting_id: str | ObjectId) -> dict[str, Any]:
    """The secretary confirms the minutes of a finished meeting: from now on read-only."""
    meeting = await view(ctx, actor, meeting_id)
    actor.require("meeting.manage", meeting["org_ancestors"])
    now = ctx.clock.now()
    confirmed = await meetings_model.update_if(
        ctx.db, meeting["_id"],
        {"status": "finished", "minutes.text": {"$exists": True},
         "minutes.confirmed_at": {"$exists": False}},
        {"$set": {"minutes.confirmed_by": actor.name, "minutes.confirmed_at": now, "updated_at": now}})
    if confirmed is None:
        raise Conflict("minutes_not_confirmable", "只有已结束、已填写且未确认的会议记录可以确认")
    await audit.record(ctx, actor, "meeting.minutes_confirm", "meeting", meeting["_id"],
                       meeting["title"], meeting["org_ancestors"])
    return confirmed


async def amend_minutes(ctx: AppContext, actor: Actor, meeting_id: str | ObjectId, text: str,
                        reason: str) -> dict[str, Any]:
    """The only change to confirmed minutes: an amendment with its reason, audited."""
    meeting = await view(ctx, actor, meeting_id)
    actor.require("meeting.manage", meeting["org_ancestors"])
    text, reason = _minutes_text(text), (reason or "").strip()
    if not reason or len(reason) > 200:
        raise InvalidInput("amend_reason_required", "请填写修正原因（不超过200字）")
    now = ctx.clock.now()
    amendment = {"text": text, "by": actor.name, "at": now, "reason": reason}
    amended = await meetings_model.update_if(
        ctx.db, meeting["_id"], {"minutes.confirmed_at": {"$exists": True}},
        {"$push": {"minutes.amendments": amendment}, "$set": {"updated_at": now}})
    if amended is None:
        raise Conflict("minutes_not_confirmed", "会议记录尚未确认，可直接修改")
    await audit.record(ctx, actor, "meeting.minutes_amend", "meeting", meeting["_id"],
                       meeting["title"], meeting["org_ancestors"], {"reason": reason, "chars": len(text)})
    return amended


def current_minutes(meeting: dict[str, Any]) -> str:
    """The minutes as amended last."""
    minutes = meeting.get("minutes") or {}
    amendments = minutes.get("amendments") or []
    return amendments[-1]["text"] if amendments else minutes.get("text", "")


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

    Returns ``{"recorded": bool, "mark": {...}, "online_link": ...}``; a member
    already marked (present, excused, online) keeps that mark.
    """
    now = now or ctx.clock.now()
    meeting = await for_member(ctx, member, meeting_id, dict(checkin.HEADER_FIELDS))
    if meeting["status"] == "cancelled":
        raise DomainError("meeting_cancelled", f"会议“{meeting['title']}”已取消")
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
    done = await meetings_model.update_one_if(
        ctx.db, meeting["_id"],
        {"status": {"$in": list(meetings_model.OPEN_STATUSES)}, "start": {"$gt": now},
         f"leave.{mid}.status": {"$nin": ["pending", "approved"]},
         f"attendance.{mid}": {"$exists": False}},
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
    may decide in between); withdrawing twice answers the same.
    """
    now = now or ctx.clock.now()
    meeting = await for_member(ctx, member, meeting_id, dict(checkin.HEADER_FIELDS))
    mid = str(member["_id"])
    for status in ("pending", "approved"):
        expected: dict[str, Any] = {"status": {"$in": list(meetings_model.OPEN_STATUSES)},
                                    "start": {"$gt": now}, f"leave.{mid}.status": status}
        changes: dict[str, Any] = {"$set": {f"leave.{mid}.status": "withdrawn",
                                            f"leave.{mid}.withdrawn_at": now}}
        if status == "approved":
            # The excused mark the approval made; a member who came after all keeps the check-in.
            expected[f"attendance.{mid}.how"] = "leave"
            changes["$unset"] = {f"attendance.{mid}": ""}
            changes["$inc"] = {"counts.excused": -1}
        if await meetings_model.update_one_if(ctx.db, meeting["_id"], expected, changes):
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
    """The secretary approves (-> excused, counted) or refuses a pending request."""
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
    if approve:
        expected.update({f"attendance.{mid}": {"$exists": False},
                         "status": {"$in": list(meetings_model.OPEN_STATUSES)}})
        changes["$set"][f"attendance.{mid}"] = {"status": "excused", "how": "leave", "at": now,
                                                "by": actor.name}
        changes["$inc"] = {"counts.excused": 1}
    decided = await meetings_model.update_if(ctx.db, meeting["_id"], expected, changes)
    if decided is None:
        raise Conflict("leave_not_pending", "该请假申请已处理、已撤回，或该党员已签到")
    request = decided["leave"][mid]
    await audit.record(ctx, actor, "meeting.leave_" + ("approve" if approve else "refuse"), "meeting",
                       meeting["_id"], meeting["title"], meeting["org_ancestors"],
                       {"member_id": mid, "member": request.get("name", "")})
    return request


# -- materials (GridFS) -----------------------------------------------------------------

# Leading bytes of each allowed type: the extension alone is a claim, not a fact.
SIGNATURES = {
    "pdf": (b"%PDF-",), "png": (b"\x89PNG\r\n\x1a\n",), "jpg": (b"\xff\xd8\xff",),
    "jpeg": (b"\xff\xd8\xff",), "docx": (b"PK\x03\x04",), "xlsx": (b"PK\x03\x04",),
    "pptx": (b"PK\x03\x04",), "doc": (b"\xd0\xcf\x11\xe0",), "xls": (b"\xd0\xcf\x11\xe0",),
    "ppt": (b"\xd0\xcf\x11\xe0",),
}
CONTENT_TYPES = {
    "pdf": "application/pdf", "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg",
    "txt": "text/plain; charset=utf-8", "doc": "application/msword",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xls": "application/vnd.ms-excel",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "ppt": "application/vnd.ms-powerpoint",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
}


def check_material(ctx: AppContext, name: str, data: bytes) -> tuple[str, str]:
    """(clean file name, content type) of an acceptable upload, else InvalidInput."""
    settings = ctx.settings.meetings
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1].strip()[:120]
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    allowed = {t.strip().lower() for t in settings.material_types.split(",") if t.strip()}
    if not name or ext not in allowed:
        raise InvalidInput("material_type_not_allowed",
                           f"不支持该文件类型，允许：{'、'.join(sorted(allowed))}")
    if len(data) > settings.material_max_bytes:
        limit = settings.material_max_bytes / 1024 / 1024
        raise DomainError("material_too_large", f"文件超过大小上限（{limit:.1f} MB）", status=413)
    if not data:
        raise InvalidInput("material_empty", "文件是空的")
    if ext in SIGNATURES and not data.startswith(SIGNATURES[ext]):
        raise InvalidInput("material_type_mismatch", "文件内容与扩展名不符")
    if ext == "txt":
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("material_type_mismatch", "文本文件应为 UTF-8 编码") from None
    return name, CONTENT_TYPES.get(ext, "application/octet-stream")


async def add_material(ctx: AppContext, actor: Actor, meeting_id: str | ObjectId, name: str,
                       data: bytes) -> dict[str, Any]:
    meeting = await view(ctx, actor, meeting_id)
    actor.require("meeting.manage", meeting["org_ancestors"])
    name, content_type = check_material(ctx, name, data)
    limit = ctx.settings.meetings.material_max_count
    if meeting["status"] == "cancelled":
        raise Conflict("meeting_cancelled", "会议已取消")
    file_id = await meetings_model.put_file(ctx.db, name, data, content_type,
                                            {"meeting_id": meeting["_id"], "kind": "material"})
    entry = {"file_id": file_id, "name": name, "size": len(data), "content_type": content_type,
             "uploaded_at": ctx.clock.now()}
    # The slot test sits in the filter, so two racing uploads cannot pass the cap.
    added = await meetings_model.update_one_if(
        ctx.db, meeting["_id"],
        {"status": {"$ne": "cancelled"}, f"materials.{limit - 1}": {"$exists": False}},
        {"$push": {"materials": entry}})
    if not added:
        await meetings_model.delete_file(ctx.db, file_id)
        raise Conflict("too_many_materials", f"每次会议最多上传{limit}个材料")
    await audit.record(ctx, actor, "meeting.material_add", "meeting", meeting["_id"], meeting["title"],
                       meeting["org_ancestors"], {"file": name, "size": len(data)})
    return entry


async def remove_material(ctx: AppContext, actor: Actor, meeting_id: str | ObjectId,
                          file_id: str | ObjectId) -> None:
    meeting = await view(ctx, actor, meeting_id)
    actor.require("meeting.manage", meeting["org_ancestors"])
    entry = material_of(meeting, file_id)
    removed = await meetings_model.update_one_if(ctx.db, meeting["_id"], {"materials.file_id": entry["file_id"]},
                                                 {"$pull": {"materials": {"file_id": entry["file_id"]}}})
    if removed:
        await meetings_model.delete_file(ctx.db, entry["file_id"])
        await audit.record(ctx, actor, "meeting.material_remove", "meeting", meeting["_id"],
                           meeting["title"], meeting["org_ancestors"], {"file": entry["name"]})


def material_of(meeting: dict[str, Any], file_id: str | ObjectId) -> dict[str, Any]:
    """The meeting's own material entry: a file id of another meeting is not found here."""
    for entry in meeting.get("materials") or []:
        if str(entry["file_id"]) == str(file_id):
            return entry
    raise NotFound("material_not_found", "找不到该会议材料")


async def open_material(ctx: AppContext, meeting: dict[str, Any],
                        file_id: str | ObjectId) -> tuple[dict[str, Any], Any]:
    """(entry, GridFS stream) of a material of ``meeting``; access is checked by the caller."""
    entry = material_of(meeting, file_id)
    stream = await meetings_model.open_file(ctx.db, entry["file_id"])
    if stream is None:
        raise NotFound("material_not_found", "找不到该会议材料")
    return entry, stream


# -- the secretary's live views -----------------------------------------------------------

NAMES_TTL = 60.0


async def member_names(ctx: AppContext, meeting: dict[str, Any]) -> dict[str, str]:
    """``{member_id: name}`` of the expected and marked members, cached briefly per meeting."""
    cache: dict[ObjectId, tuple[float, dict[str, str]]] = ctx.caches.setdefault("meetings.names", {})
    hit = cache.get(meeting["_id"])
    wanted = {str(i) for i in meeting.get("expected") or ()} | set(meeting.get("attendance") or {}) \
        | set(meeting.get("leave") or {})
    if hit is not None and hit[0] > time.monotonic() and wanted <= hit[1].keys():
        return hit[1]
    rows = await members_model.by_ids(ctx.db, [ObjectId(i) for i in wanted], {"name": 1})
    names = {str(r["_id"]): r["name"] for r in rows}
    if len(cache) > 200:
        cache.clear()
    cache[meeting["_id"]] = (time.monotonic() + NAMES_TTL, names)
    return names


async def board(ctx: AppContext, actor: Actor, meeting_id: str | ObjectId) -> dict[str, Any]:
    """Who is in: counts, the latest arrivals first, and who is still missing."""
    meeting = await view(ctx, actor, meeting_id)
    names = await member_names(ctx, meeting)
    marks = sorted(((mid, m) for mid, m in (meeting.get("attendance") or {}).items()),
                   key=lambda item: item[1]["at"], reverse=True)
    arrived = [{"name": names.get(mid, "（已移除）"), "status": m["status"],
                "how": checkin.HOW_LABELS.get(m["how"], m["how"]),
                "at": m["at"].astimezone(SHANGHAI).strftime("%H:%M:%S")} for mid, m in marks]
    missing = sorted(names.get(str(i), "") for i in meeting.get("expected") or ()
                     if str(i) not in (meeting.get("attendance") or {}))
    counts = meeting["counts"]
    now = ctx.clock.now()
    return {"title": meeting["title"], "status": display_status(meeting, now),
            "status_label": status_label(meeting, now), "expected": meeting["expected_count"],
            "present": counts["present"], "online": counts["online"], "excused": counts["excused"],
            "absent": meetings_model.absent_count(meeting), "arrived": arrived, "missing": missing}


def leave_requests(meeting: dict[str, Any], names: dict[str, str]) -> list[dict[str, Any]]:
    """Leave requests, pending first, for the secretary's page."""
    rows = [{"member_id": mid, "name": names.get(mid, r.get("name", "")), **r}
            for mid, r in (meeting.get("leave") or {}).items()]
    return sorted(rows, key=lambda r: (r["status"] != "pending", r["at"]))


async def upcoming_text(ctx: AppContext, member: dict[str, Any], limit: int = 5) -> str:
    """The chat answer to 会议: the member's next meetings, their time, place and own state."""
    if member.get("state", "active") != "active":
        return "您的党籍状态不是“正常”，暂无组织生活安排。"
    now = ctx.clock.now()
    rows = await member_meetings(ctx, member, "upcoming", limit=limit, now=now)
    if not rows:
        return "近期没有需要您参加的会议。"
    lines = ["您近期的组织生活："]
    for m in rows:
        start = m["start"].astimezone(SHANGHAI)
        state = {"present": "（已签到）", "online": "（线上参会）", "excused": "（已请假）",
                 "leave_pending": "（请假待批）"}.get(member_state(m, member["_id"]) or "", "")
        lines.append(f"· {start:%m月%d日 %H:%M} {MEETING_TYPES.get(m['type'], '')}：{m['title']}"
                     f"，{m.get('place') or '线上'}{state}")
    lines.append("到会后扫描会场签到码即可签到；请假请在小程序中提交。")
    return "\n".join(lines)
