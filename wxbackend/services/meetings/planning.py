"""The meeting state machine: create, update, publish, cancel, start, finish.

    draft --publish--> planned --start--> in_progress --finish--> finished
                          |                    |                      |
                          +--------cancel------+----------------------+--> cancelled

Every step is a conditional update with the expected status in the filter, so a
retried or racing request changes nothing twice. Finishing counts the meeting in
compliance exactly once, after the update succeeded; cancelling a finished meeting
takes it back out. See the package docstring for the rest.

A meeting whose end has passed may be saved and published as a record of a
meeting held (补录), but only when the secretary confirms it (``confirm_past``;
otherwise ``meeting_in_past``): publishing it notifies nobody, makes no codes and
sends no reminder (``backfilled`` on the meeting). The types and the audience a
branch can choose are :mod:`.audience`'s rules.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId

from models import meetings as meetings_model
from models import members as members_model
from wxbackend.clock import SHANGHAI
from wxbackend.context import AppContext
from wxbackend.errors import Conflict, DomainError, InvalidInput
from wxbackend.services import orgs
from wxbackend.services.accounts import audit
from wxbackend.services.accounts.access import Actor
from wxbackend.services.meetings import checkin, compliance, meeting_notices, printed_codes
from wxbackend.services.meetings.audience import (
    branch_of,
    check_audience,
    check_type,
    committee_ids,
)
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


async def create(ctx: AppContext, actor: Actor, org_id: str | ObjectId,
                 raw: dict[str, Any]) -> dict[str, Any]:
    """A draft meeting of a branch (not visible to members until published)."""
    org = await branch_of(ctx, org_id)
    actor.require("meeting.manage", org["org_ancestors"])
    clean = validate_fields(raw)
    check_type(ctx, org, clean["type"])
    _check_past(ctx, clean, raw)
    await check_audience(ctx, org, clean["audience"])
    organiser = {"user_id": actor.id, "name": actor.name}
    title, start, end = clean.pop("title"), clean.pop("start"), clean.pop("end")
    doc = meetings_model.new_meeting(org, clean.pop("type"), title, start, end, organiser,
                                     SHANGHAI, now=ctx.clock.now(), **clean)
    await meetings_model.insert(ctx.db, doc)
    await audit.record(ctx, actor, "meeting.create", "meeting", doc["_id"], title, doc["org_ancestors"])
    return doc


PAST_MESSAGE = "会议时间已过。如为补录已召开的会议，请勾选“确认补录”（补录的会议发布时不通知党员）"


def _check_past(ctx: AppContext, clean: dict[str, Any], raw: dict[str, Any],
                meeting: dict[str, Any] | None = None) -> None:
    """Times already over: a record of a meeting held (补录) is legitimate, once confirmed.

    Re-saving a past meeting with the times it was confirmed with asks nothing again.
    """
    if clean["end"] > ctx.clock.now() or raw.get("confirm_past"):
        return
    if meeting is not None and (meeting["start"], meeting["end"]) == (clean["start"], clean["end"]):
        return
    raise InvalidInput("meeting_in_past", PAST_MESSAGE,
                       details=[{"field": "confirm_past", "message": PAST_MESSAGE}])


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
        wanted = set(committee_ids(org))
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
    org = await branch_of(ctx, meeting["org_id"])
    clean = validate_fields(raw)
    check_type(ctx, org, clean["type"], keep=meeting["type"])
    _check_past(ctx, clean, raw, meeting)
    await check_audience(ctx, org, clean["audience"])
    now = ctx.clock.now()
    changes = {**clean, "month": meetings_model.month_of(clean["start"], SHANGHAI), "updated_at": now}
    if meeting["status"] == "planned":
        changes["expected"] = await expected_members(ctx, org, clean["audience"])
        changes["expected_count"] = len(changes["expected"])
    if clean["start"] != meeting["start"] or (clean["reminder_minutes"] != meeting.get("reminder_minutes")
                                              and not meeting.get("reminded_at")):
        # Too late for a separate reminder: the change notice says when it starts.
        late = meeting["status"] == "planned" and not meeting_notices.reminder_needed(ctx, clean, now)
        changes["reminded_at"] = now if late else None
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
    if updated["status"] == "planned" and changed and updated["end"] > now:
        await meeting_notices.send(ctx, updated, "meeting_changed")
    return updated


async def publish(ctx: AppContext, actor: Actor, meeting_id: str | ObjectId, *,
                  confirm_past: bool = False) -> dict[str, Any]:
    """draft -> planned: fix the expected attendees, notify each of them, have the codes made.

    The printed check-in codes are made by a job (WeChat calls, quota), never
    by a page that shows them; a draft saved before meetings had a secret gets
    one here. A meeting starting so soon that its reminder time has passed gets
    no separate reminder (the notice says when it starts). A meeting already
    over is published only as a record (补录, ``confirm_past``): nobody is
    notified, no codes are made.
    """
    meeting = await view(ctx, actor, meeting_id)
    actor.require("meeting.manage", meeting["org_ancestors"])
    now = ctx.clock.now()
    backfill = meeting["end"] <= now
    if meeting["status"] == "draft" and backfill and not confirm_past:
        raise DomainError("meeting_in_past", "会议时间已过。如为补录已召开的会议，请勾选“确认补录”后发布（不通知党员）")
    org = await branch_of(ctx, meeting["org_id"])
    expected = await expected_members(ctx, org, meeting["audience"])
    if not expected:
        raise DomainError("no_attendees", "参会范围内没有在册党员")
    reminded_at = None if meeting_notices.reminder_needed(ctx, meeting, now) else now
    published = await meetings_model.update_if(
        ctx.db, meeting["_id"], {"status": "draft"},
        {"$set": {"status": "planned", "published_at": now, "updated_at": now,
                  "expected": expected, "expected_count": len(expected), "reminded_at": reminded_at,
                  "backfilled": backfill,
                  "checkin_secret": meeting.get("checkin_secret") or meetings_model.new_checkin_secret()}})
    if published is None:
        raise Conflict("meeting_not_draft", "会议已发布或已取消")
    checkin.forget(ctx, meeting["_id"])
    await audit.record(ctx, actor, "meeting.publish", "meeting", meeting["_id"], meeting["title"],
                       meeting["org_ancestors"], {"expected": len(expected), "backfilled": backfill})
    if not backfill:
        await printed_codes.queue_codes(ctx, published)
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
    # A 补录 meeting was never announced: its cancellation is news to nobody.
    if meeting["status"] in ("planned", "in_progress") and not meeting.get("backfilled"):
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

