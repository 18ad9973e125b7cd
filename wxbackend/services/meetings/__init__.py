"""Meetings (三会一课): plan, publish, change, cancel, start, finish, minutes, materials, leave.

This package is the organisational-life capability; its public operations are
imported here from the modules that hold them (``planning`` the state machine,
``rules`` the fields and labels, ``minutes``, ``attendance`` with leave,
``materials``, ``board``; check-in, comments, votes, compliance and the ledger
have modules of their own), so callers write ``meetings.publish(...)``.

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

from wxbackend.services.meetings.attendance import (
    MEMBER_FIELDS,
    can_check_in,
    decide_leave,
    detail_fields,
    for_member,
    join_online,
    leave_requests,
    member_meetings,
    member_state,
    my_marks,
    request_leave,
    with_marks,
    withdraw_leave,
)
from wxbackend.services.meetings.board import (
    NAMES_KEPT,
    NAMES_TTL,
    BoardNames,
    board,
    member_names,
)
from wxbackend.services.meetings.materials import (
    CONTENT_TYPES,
    SIGNATURES,
    add_material,
    check_material,
    material_of,
    open_material,
    remove_material,
)
from wxbackend.services.meetings.minutes import (
    amend_minutes,
    confirm_minutes,
    current_minutes,
    record_minutes,
)
from wxbackend.services.meetings.planning import (
    cancel,
    create,
    expected_members,
    finish,
    of_month,
    publish,
    start,
    start_due,
    update,
    view,
)
from wxbackend.services.meetings.reminders import every_minute
from wxbackend.services.meetings.rules import (
    CANCELLABLE,
    EDITABLE,
    FIELD_LABELS,
    LEAVE_REASON_LIMIT,
    MAX_DURATION,
    MINUTES_LIMIT,
    NOTICE_FIELDS,
    TEXT_LIMITS,
    absent_count,
    checkin_opens_at,
    display_status,
    get_meeting,
    parse_id,
    raise_field_errors,
    status_label,
    validate_fields,
)

__all__ = [
    "CANCELLABLE",
    "CONTENT_TYPES",
    "EDITABLE",
    "FIELD_LABELS",
    "LEAVE_REASON_LIMIT",
    "MAX_DURATION",
    "MEMBER_FIELDS",
    "MINUTES_LIMIT",
    "NAMES_KEPT",
    "NAMES_TTL",
    "NOTICE_FIELDS",
    "SIGNATURES",
    "TEXT_LIMITS",
    "BoardNames",
    "absent_count",
    "add_material",
    "amend_minutes",
    "board",
    "can_check_in",
    "cancel",
    "check_material",
    "checkin_opens_at",
    "confirm_minutes",
    "create",
    "current_minutes",
    "decide_leave",
    "detail_fields",
    "display_status",
    "every_minute",
    "expected_members",
    "finish",
    "for_member",
    "get_meeting",
    "join_online",
    "leave_requests",
    "material_of",
    "member_meetings",
    "member_names",
    "member_state",
    "my_marks",
    "of_month",
    "open_material",
    "parse_id",
    "publish",
    "raise_field_errors",
    "record_minutes",
    "remove_material",
    "request_leave",
    "start",
    "start_due",
    "status_label",
    "update",
    "validate_fields",
    "view",
    "with_marks",
    "withdraw_leave",
]
