"""The minute cron of meetings: start what has started, remind (会议即将开始) what is about to.

A reminder goes out once per meeting start, when ``start - reminder_minutes``
has come: each meeting is claimed by a conditional update of ``reminded_at``,
so two workers never remind twice. It goes only to the expected members still
to come: not to those already checked in (present, online) nor to those on
approved leave (excused). A meeting published or moved too late for a
separate reminder is marked reminded at that moment
(:func:`.meeting_notices.reminder_needed`), so the scan skips it::

    reminded = await send_due_reminders(ctx)     # how many meetings were reminded
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId

from models import meetings as meetings_model
from wxbackend import jobs
from wxbackend.context import AppContext
from wxbackend.services.meetings import meeting_notices, printed_codes
from wxbackend.services.meetings.attendance import member_state, with_marks
from wxbackend.services.meetings.planning import start_due

# Marks that mean "no need to remind": here (in person or online) or excused (approved leave).
MARKED = ("present", "online", "excused")


def still_to_come(meeting: dict[str, Any]) -> list[ObjectId]:
    """Expected members neither checked in nor on approved leave."""
    return [m for m in meeting.get("expected") or () if member_state(meeting, m) not in MARKED]


async def send_due_reminders(ctx: AppContext, now: datetime | None = None) -> int:
    """Remind those still to come of every published meeting whose reminder time has come."""
    now = now or ctx.clock.now()
    horizon = now + timedelta(minutes=meeting_notices.max_reminder_minutes(ctx))
    due = await meetings_model.by_status_starting(
        ctx.db, "planned", now, horizon,
        {"start": 1, "reminder_minutes": 1, "reminded_at": 1, "status": 1})
    reminded = 0
    for brief in due:
        if brief.get("reminded_at") or meeting_notices.reminder_at(ctx, brief) > now:
            continue
        claimed = await meetings_model.update_if(ctx.db, brief["_id"],
                                                 {"status": "planned", "reminded_at": None},
                                                 {"$set": {"reminded_at": now}})
        if claimed is not None:
            await meeting_notices.send(ctx, claimed, "meeting_reminder",
                                       still_to_come(await with_marks(ctx, claimed)))
            reminded += 1
    return reminded


@jobs.cron_job("meeting_reminders", "meeting_reminders", timeout=120)
async def every_minute(ctx: AppContext) -> dict[str, int]:
    """Cron: start what has started, remind what is about to (each step claimed, so once)."""
    return {"started": await start_due(ctx), "reminded": await send_due_reminders(ctx)}


# The capability's jobs (capability.py lists them).
JOBS = (every_minute, printed_codes.make_codes)
