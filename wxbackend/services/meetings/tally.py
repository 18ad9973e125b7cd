"""Settling a finished meeting's attendance: the marks are the record, the counters follow.

While a meeting runs, each mark (``models.attendance``) is written first and
counted after, by whoever wrote it, in ``attendance_counts``; exactly, under
double taps and races, because each insert, conditional update or delete of a
mark has one winner and only the winner counts. What can leave the counters
short of the marks is a process killed between the two writes (or a write
lost with a database that went away between them). The counters cannot be
recounted while check-ins may be in flight: a round that inserted marks and
has not yet counted them would be counted twice. So a meeting is recounted
once it is finished and ``GRACE`` has passed (nothing can be in flight then:
check-in needs an open meeting, re-checked after each insert), by the cron job
``attendance_settle``::

    counts = await settle(ctx, meeting_id)      # None if not due (or settled already)

Settling also finishes the two-write leave steps a crash may have cut
(an approved request without its excused mark, a withdrawn one with it), then
writes the recount into the meeting's own ``counts`` and the marks into its
``attendance`` map with ``counts_live`` false (from then on the meeting reads
as the demo history does: one document, its marks in it), and drops the mark
documents, the rolls and the running counters.
If the recount differs from what the meeting showed when it finished,
compliance counts it again (``meeting_unfinished`` then ``meeting_finished``,
both idempotent), before the fold, so a crash in between is retried by the
next run.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId

from models import attendance as attendance_model
from models import meetings as meetings_model
from wxbackend import jobs
from wxbackend.context import AppContext
from wxbackend.services.meetings import compliance

log = logging.getLogger(__name__)

# After a meeting's finish, no round of check-in writes is still in flight (requests time out
# long before); only then is a recount exact.
GRACE = timedelta(minutes=10)
# How far back the cron job looks for finished meetings still to settle.
LOOKBACK = timedelta(days=2)
PAGE = 500


async def repair_leave(ctx: AppContext, meeting: dict[str, Any], marks: dict[str, dict[str, Any]]) -> int:
    """Make the excused marks agree with the leave requests (a decision cut by a crash);
    how many marks changed. ``marks`` is updated in place."""
    changed = 0
    leave = meeting.get("leave") or {}
    for mid, request in leave.items():
        if request.get("status") == "approved" and mid not in marks:
            mark = {"status": "excused", "how": "leave", "at": request.get("decided_at") or request["at"],
                    "by": request.get("decided_by", "")}
            new, _ = await attendance_model.claim(ctx.db, meeting["_id"], {mid: mark})
            if new:
                marks[mid], changed = mark, changed + 1
    for mid, mark in list(marks.items()):
        if (mark["how"] == "leave" and mark["status"] == "excused"
                and (leave.get(mid) or {}).get("status") != "approved"
                and await attendance_model.remove_if(ctx.db, meeting["_id"], mid,
                                                     {"status": "excused", "how": "leave"})):
            del marks[mid]
            changed += 1
    if changed:
        await attendance_model.add_counts(ctx.db, meeting["_id"], {"removed": changed})  # boards: read again
    return changed


async def settle(ctx: AppContext, meeting_id: ObjectId, now: datetime | None = None) -> dict[str, int] | None:
    """Recount a finished meeting from its marks and keep the counts in the meeting.

    None when it is not due: not finished, finished less than ``GRACE`` ago, or
    settled already. Returns the counts otherwise.
    """
    now = now or ctx.clock.now()
    meeting = await meetings_model.get(ctx.db, meeting_id)  # counts with their running increments
    if (meeting is None or meeting["status"] != "finished" or not meeting.get("counts_live")
            or (meeting.get("finished_at") or now) > now - GRACE):
        return None
    marks = await attendance_model.of_meeting(ctx.db, meeting_id)
    repaired = await repair_leave(ctx, meeting, marks)
    counts = attendance_model.tally(marks.values())
    shown = {s: (meeting.get("counts") or {}).get(s, 0) for s in attendance_model.STATUSES}
    if counts != shown:
        log.warning("meeting %s: counters %s recounted from its marks as %s (%d leave marks repaired)",
                    meeting_id, shown, counts, repaired)
        await compliance.meeting_unfinished(ctx, meeting)
        await compliance.meeting_finished(ctx, {**meeting, "counts": counts})
    if await meetings_model.update_one_if(ctx.db, meeting_id, {"status": "finished", "counts_live": True},
                                          {"$set": {"counts": counts, "attendance": marks, "counts_live": False}}):
        await attendance_model.drop_meeting(ctx.db, meeting_id, marks)
    return counts


@jobs.cron_job("attendance_settle", "attendance_settle", timeout=600)
async def settle_finished(ctx: AppContext) -> dict[str, int]:
    """Cron: settle the meetings finished between ``LOOKBACK`` and ``GRACE`` ago (each once:
    a settled meeting is no longer ``counts_live``)."""
    now = ctx.clock.now()
    since, until = now - LOOKBACK, now - GRACE
    seen: set[ObjectId] = set()
    settled = 0
    while True:
        page = await meetings_model.finished_between(ctx.db, since, until, {"counts_live": 1, "finished_at": 1},
                                                     limit=PAGE)
        for brief in page:
            if brief["_id"] not in seen and brief.get("counts_live"):
                settled += await settle(ctx, brief["_id"], now) is not None
            seen.add(brief["_id"])
        if len(page) < PAGE or page[-1]["finished_at"] == since:
            break
        since = page[-1]["finished_at"]
    return {"settled": settled, "looked_at": len(seen)}
