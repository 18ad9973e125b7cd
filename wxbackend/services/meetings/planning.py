"""The meeting state machine: create, update, publish, cancel, start, finish.

    draft --publish--> planned --start--> in_progress --finish--> finished
                          |                    |                      |
                          +--------cancel------+----------------------+--> cancelled

Every step is a conditional update with the expected status in the filter, so a
retried or racing request changes nothing twice. Finishing counts the meeting in
compliance exactly once, after the update succeeded; cancelling a finished meeting
takes it back out. See the package docstring for the rest.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId

from models import meetings as meetings_model
from models import members as members_model
from wxbackend import jobs
from wxbackend.clock import SHANGHAI
from wxbackend.context import AppContext
from wxbackend.errors import Conflict, DomainError, InvalidInput
from wxbackend.services import orgs
from wxbackend.services.accounts import audit
from wxbackend.services.accounts.access import Actor
from wxbackend.services.meetings import checkin, compliance, meeting_notices, printed_codes
from wxbackend.services.meetings.rules import (
    CANCELLABLE,
    EDITABLE,
    NOTICE_FIELDS,
    get_meeting,
    validate_fields,
)


async def view(ctx: AppContext, actor: Actor, meeting_id: str | ObjectId) -> dict[str, Any]:
    """A meeting the actor may see (management side)."""
    meeting = await get_meeting(ctx, meeting_id)
    actor.require("meeting.view", meeting["org_ancestors"])
    return meeting


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
    if updated["status"] == "planned" and updated["end"] > meeting["end"]:
        await printed_codes.queue_codes(ctx, updated)  # the official-account code must outlive the end
    changed = [f for f in NOTICE_FIELDS if meeting.get(f) != updated.get(f)]
    await audit.record(ctx, actor, "meeting.update", "meeting", meeting["_id"], updated["title"],
                       updated["org_ancestors"], {"fields": sorted(k for k in clean if meeting.get(k) != clean[k])})
    if updated["status"] == "planned" and changed:
        await meeting_notices.send(ctx, updated, "meeting_changed")
    return updated


async def publish(ctx: AppContext, actor: Actor, meeting_id: str | ObjectId) -> dict[str, Any]:
    """draft -> planned: fix the expected attendees, notify each of them, have the codes made.

    The printed check-in codes are made by a job (WeChat calls, quota), never
    by a page that shows them; a draft saved before meetings had a secret gets
    one here.
    """
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
                  "expected": expected, "expected_count": len(expected),
                  "checkin_secret": meeting.get("checkin_secret") or meetings_model.new_checkin_secret()}})
    if published is None:
        raise Conflict("meeting_not_draft", "会议已发布或已取消")
    checkin.forget(ctx, meeting["_id"])
    await printed_codes.queue_codes(ctx, published)
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
        await compliance.meeting_unfinished(ctx, cancelled)
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
    await compliance.meeting_finished(ctx, done)
    await audit.record(ctx, actor, "meeting.finish", "meeting", meeting["_id"], done["title"],
                       done["org_ancestors"], {"present": done["counts"]["present"]})
    return done


async def of_month(ctx: AppContext, actor: Actor, org_id: str | ObjectId,
                   month: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An organisation the actor may see and its meetings of ``month`` ("2026-12"), for its calendar."""
    org = await orgs.view(ctx, actor, org_id)
    actor.require("meeting.view", org["org_ancestors"])
    return org, await meetings_model.in_org_month(ctx.db, org["_id"], month)


# The capability's jobs (capability.py lists them).
JOBS = (every_minute, printed_codes.make_codes)
