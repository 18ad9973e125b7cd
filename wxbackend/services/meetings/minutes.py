"""Minutes (会议记录): recorded after the start, confirmed once, amended with a reason afterwards."""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from models import meetings as meetings_model
from wxbackend.context import AppContext
from wxbackend.errors import Conflict, DomainError, InvalidInput
from wxbackend.services.accounts import audit
from wxbackend.services.accounts.access import Actor
from wxbackend.services.meetings.planning import view
from wxbackend.services.meetings.rules import MINUTES_LIMIT, display_status

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
