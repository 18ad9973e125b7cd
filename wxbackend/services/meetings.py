"""Meetings (三会一课): plan, publish, change, cancel, finish, minutes.

State machine (docs/MEETINGS-DESIGN.md)::

    draft -> planned -> in_progress -> finished
               |            |
               +------------+--> cancelled

Every step is a conditional update with the expected status in the filter, so
a retried or racing request changes nothing twice. Finishing calls
``compliance.meeting_finished`` exactly once, after the update succeeded.

Example::

    meeting = await finish(ctx, actor, meeting_id)
"""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from models import meetings as meetings_model
from wxbackend.context import AppContext
from wxbackend.errors import Conflict, NotFound
from wxbackend.services import audit
from wxbackend.services.access import Actor


def _compliance() -> Any | None:
    """B's compliance module, when it exists (it is built alongside this one)."""
    try:
        return importlib.import_module("wxbackend.services.compliance")
    except ModuleNotFoundError as exc:
        if exc.name != "wxbackend.services.compliance":
            raise
        return None


async def get_meeting(ctx: AppContext, meeting_id: ObjectId) -> dict[str, Any]:
    meeting = await meetings_model.get(ctx.db, meeting_id)
    if meeting is None:
        raise NotFound("meeting_not_found", "会议不存在")
    return meeting


async def finish(ctx: AppContext, actor: Actor, meeting_id: ObjectId) -> dict[str, Any]:
    """planned|in_progress -> finished; tells compliance once."""
    meeting = await get_meeting(ctx, meeting_id)
    actor.require("meeting.manage", meeting["org_ancestors"])
    now = datetime.now(UTC)
    done = await meetings_model.update_if(
        ctx.db, meeting_id, {"status": {"$in": list(meetings_model.OPEN_STATUSES)}},
        {"$set": {"status": "finished", "finished_at": now, "updated_at": now}})
    if done is None:
        raise Conflict("meeting_not_open", "会议已结束或已取消")
    compliance = _compliance()
    if compliance is not None:
        await compliance.meeting_finished(ctx, done)
    await audit.record(ctx, actor, "meeting.finish", "meeting", meeting_id, done["title"],
                       done["org_ancestors"])
    return done
