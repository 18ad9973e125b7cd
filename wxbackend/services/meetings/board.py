"""The secretary's live board: who is in, who is missing, names cached briefly.

The board counts the marks it lists (``models.attendance``), so its figures
and its names agree at every moment, also while a round of check-ins has
inserted its marks and not yet moved the meeting's counters. It refreshes
every 3 s during the very rush it shows, so its marks come from
:func:`.attendance.with_marks`, which reads only what changed since the last look.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from cachetools import TTLCache

from models import attendance as attendance_model
from models import meetings as meetings_model
from models import members as members_model
from wxbackend.clock import SHANGHAI
from wxbackend.context import AppContext
from wxbackend.services.accounts.access import Actor
from wxbackend.services.meetings import checkin
from wxbackend.services.meetings.attendance import with_marks
from wxbackend.services.meetings.planning import view
from wxbackend.services.meetings.rules import display_status, status_label

# -- the secretary's live views -----------------------------------------------------------

NAMES_TTL = 60.0
NAMES_KEPT = 200


class BoardNames:
    """A process's attendee names per meeting, for the live board (the least recently used go first)."""

    def __init__(self) -> None:
        self.names: TTLCache[ObjectId, dict[str, str]] = TTLCache(NAMES_KEPT, NAMES_TTL)


async def member_names(ctx: AppContext, meeting: dict[str, Any]) -> dict[str, str]:
    """``{member_id: name}`` of the expected and marked members, cached briefly per meeting."""
    cache = ctx.state(BoardNames).names
    hit = cache.get(meeting["_id"])
    wanted = {str(i) for i in meeting.get("expected") or ()} | set(meeting.get("attendance") or {}) \
        | set(meeting.get("leave") or {})
    if hit is not None and wanted <= hit.keys():
        return hit
    rows = await members_model.by_ids(ctx.db, [ObjectId(i) for i in wanted], {"name": 1})
    names = cache[meeting["_id"]] = {str(r["_id"]): r["name"] for r in rows}
    return names


async def board(ctx: AppContext, actor: Actor, meeting_id: str | ObjectId) -> dict[str, Any]:
    """Who is in: counts, the latest arrivals first, and who is still missing."""
    meeting = await with_marks(ctx, await view(ctx, actor, meeting_id))
    names = await member_names(ctx, meeting)
    marks = sorted(((mid, m) for mid, m in (meeting.get("attendance") or {}).items()),
                   key=lambda item: item[1]["at"], reverse=True)
    arrived = [{"name": names.get(mid, "（已移除）"), "status": m["status"],
                "how": checkin.HOW_LABELS.get(m["how"], m["how"]),
                "at": m["at"].astimezone(SHANGHAI).strftime("%H:%M:%S")} for mid, m in marks]
    missing = sorted(names.get(str(i), "") for i in meeting.get("expected") or ()
                     if str(i) not in (meeting.get("attendance") or {}))
    counts = attendance_model.tally(meeting["attendance"].values())
    now = ctx.clock.now()
    return {"title": meeting["title"], "status": display_status(meeting, now),
            "status_label": status_label(meeting, now), "expected": meeting["expected_count"],
            "present": counts["present"], "online": counts["online"], "excused": counts["excused"],
            "absent": meetings_model.absent_count({**meeting, "counts": counts}), "arrived": arrived,
            "missing": missing}
