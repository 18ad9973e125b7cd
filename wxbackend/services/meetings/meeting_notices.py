"""Meeting notices: published, changed, cancelled, reminder — one way out.

:func:`send` is the only place meetings talk to members. It hands the notice
to the notifications service (:mod:`wxbackend.services.notify`, kinds
``meeting_published``, ``meeting_changed``, ``meeting_cancelled``,
``meeting_reminder``, templates from ``[meetings]``), which records it in the
member's inbox, picks the channel and queues the delivery. Failures are
logged and counted, never raised: a notice must not undo the publication it
reports::

    sent = await send(ctx, meeting, "meeting_published")
    sent.ok, sent.failed, sent.skipped

When a meeting is published (or moved) so late that its reminder time has
passed or is only :data:`REMINDER_MARGIN` away, no separate reminder follows:
the notice itself says when it starts (:func:`reminder_needed`). The reminder
scan (cron) is :mod:`.reminders`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId

from models.enums import MEETING_TYPES
from wxbackend.clock import SHANGHAI
from wxbackend.context import AppContext
from wxbackend.services import notify
from wxbackend.settings import Settings

log = logging.getLogger(__name__)

SUBJECTS = {
    "meeting_published": "会议通知",
    "meeting_changed": "会议变更通知",
    "meeting_cancelled": "会议取消通知",
    "meeting_reminder": "会议即将开始",
}


@dataclass
class Sent:
    ok: int = 0
    failed: int = 0
    skipped: int = 0


# Classic template message fields (official account) and subscribe-message fields
# (mini-program; "thing" values hold 20 characters, notify cuts them to fit).
OA_FIELDS = {"first": "{subject}：{title}", "keyword1": "{topic}", "keyword2": "{time}",
             "keyword3": "{place}", "remark": "{type}"}
MP_FIELDS = {"thing1": "{title}", "time2": "{start}", "thing3": "{place}", "thing4": "{subject}"}


def kinds(settings: Settings) -> tuple[notify.Kind, ...]:
    """The meeting kinds (their mini-program page comes from the settings)."""
    page = settings.meetings.mp_meeting_page + "?id={meeting_id}"
    return tuple(notify.Kind(
        name=kind, title=subject, template_setting="meetings", fields=OA_FIELDS,
        mp_fields=MP_FIELDS, required=("title", "time", "place"), page=page,
        urgent=kind != "meeting_published", summary="{title}，{time}，{place}")
        for kind, subject in SUBJECTS.items())


def subject_of(meeting: dict[str, Any], kind: str) -> str:
    """The event a notice reports (notify sends each (member, kind, subject) once)."""
    base = f"meeting:{meeting['_id']}:{kind.removeprefix('meeting_')}"
    if kind == "meeting_changed":
        return f"{base}:{int(meeting['updated_at'].timestamp() * 1000)}"
    if kind == "meeting_reminder":
        return f"{base}:{int(meeting['start'].timestamp())}"
    return base


def notice_data(meeting: dict[str, Any], kind: str) -> dict[str, str]:
    """What every notice says: topic, time and place."""
    start = meeting["start"].astimezone(SHANGHAI)
    end = meeting["end"].astimezone(SHANGHAI)
    when = f"{start:%Y-%m-%d %H:%M}-{end:%H:%M}" if start.date() == end.date() else \
        f"{start:%Y-%m-%d %H:%M} 至 {end:%Y-%m-%d %H:%M}"
    place = meeting.get("place") or ("线上会议" if meeting.get("online_link") else "另行通知")
    return {"meeting_id": str(meeting["_id"]), "title": meeting["title"],
            "type": MEETING_TYPES.get(meeting["type"], meeting["type"]),
            "topic": meeting.get("topic") or meeting["title"], "time": when, "place": place,
            "start": f"{start:%Y-%m-%d %H:%M}", "subject": SUBJECTS[kind]}


async def send(ctx: AppContext, meeting: dict[str, Any], kind: str,
               recipients: list[ObjectId] | None = None) -> Sent:
    """Tell ``recipients`` (default: the expected attendees) about ``meeting``."""
    assert kind in SUBJECTS
    recipients = list(meeting.get("expected") or []) if recipients is None else recipients
    if not recipients:
        return Sent()
    data = notice_data(meeting, kind)
    try:
        result = await notify.notify(ctx, [notify.Recipient(member_id=m) for m in recipients],
                                     kind, data, subject=subject_of(meeting, kind))
        # A big fan-out is planned for the workers rather than created here.
        return Sent(ok=result.created + result.planned - result.undeliverable,
                    skipped=result.undeliverable + result.skipped)
    except Exception:
        # The meeting change is done; a notice that failed is logged, never raised.
        log.exception("meeting notice %s of %s failed", kind, meeting["_id"])
        return Sent(failed=len(recipients))


# -- reminders ------------------------------------------------------------------------

# A reminder due this soon after a notice would only repeat it (会议通知, then 会议即将开始 seconds later).
REMINDER_MARGIN = timedelta(minutes=10)


def reminder_minutes(ctx: AppContext, meeting: dict[str, Any]) -> int:
    return meeting.get("reminder_minutes") or ctx.settings.meetings.reminder_minutes


def reminder_at(ctx: AppContext, meeting: dict[str, Any]) -> datetime:
    """When the meeting's reminder is due."""
    return meeting["start"] - timedelta(minutes=reminder_minutes(ctx, meeting))


def reminder_needed(ctx: AppContext, meeting: dict[str, Any], now: datetime) -> bool:
    """Whether a separate reminder is still worth sending after a notice sent ``now``."""
    return reminder_at(ctx, meeting) > now + REMINDER_MARGIN


def max_reminder_minutes(ctx: AppContext) -> int:
    """How far ahead the scan looks: meetings may ask for up to a day."""
    return max(ctx.settings.meetings.reminder_minutes, 24 * 60)
