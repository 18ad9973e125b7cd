"""Rules of a meeting's fields and the status people see: validation, labels, limits."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId

from models import meetings as meetings_model
from models.enums import MEETING_STATUSES, MEETING_TYPES
from wxbackend.clock import SHANGHAI
from wxbackend.context import AppContext
from wxbackend.errors import InvalidInput, NotFound
from wxbackend.services.meetings import checkin
from wxbackend.services.orgs.members import FieldError

EDITABLE = ("draft", "planned")
CANCELLABLE = ("draft", "planned", "in_progress", "finished")
TEXT_LIMITS = {"title": 60, "topic": 200, "agenda": 2000, "place": 100, "online_link": 500}
MINUTES_LIMIT = 20000
LEAVE_REASON_LIMIT = 200
MAX_DURATION = timedelta(days=3)
FIELD_LABELS = {"title": "会议名称", "topic": "会议主题", "agenda": "议程", "place": "地点",
                "online_link": "线上会议链接", "type": "会议类型", "start": "开始时间", "end": "结束时间",
                "reminder_minutes": "提前提醒", "audience": "参会范围", "group_id": "党小组",
                "member_ids": "参会党员", "latitude": "会场纬度", "longitude": "会场经度"}
# Fields whose change is worth telling the attendees about.
NOTICE_FIELDS = ("start", "end", "place", "online_link")


def parse_id(raw: str | ObjectId) -> ObjectId:
    return checkin.parse_meeting_id(raw)


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


def secretary_actions(meeting: dict[str, Any], now: datetime) -> list[str]:
    """The steps the meeting page's 操作 section offers now (none: no section at all).

    ``edit``, ``publish``, ``start``, ``finish``, ``cancel``; the services check each again.
    """
    status = meeting["status"]
    offered = [name for name, fits in (
        ("edit", status in EDITABLE),
        ("publish", status == "draft"),
        ("start", status == "planned" and meeting["end"] > now),
        ("finish", status in meetings_model.OPEN_STATUSES and meeting["start"] <= now),
        ("cancel", status in CANCELLABLE and not (meeting.get("minutes") or {}).get("confirmed_at")),
    ) if fits]
    return offered


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
    clean["rotating_only"] = bool(raw.get("rotating_only"))
    clean["geo"] = _geo(raw, errors)
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


def _coordinate(raw: dict[str, Any], name: str, limit: float, errors: list[FieldError]) -> float | None:
    value = raw.get(name)
    if value in (None, ""):
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        number = math.nan
    if not -limit <= number <= limit:  # NaN fails too
        errors.append(FieldError(name, f"应为-{limit:g}到{limit:g}之间的数"))
        return None
    return round(number, 6)  # ~0.1 m: more is noise


def _geo(raw: dict[str, Any], errors: list[FieldError]) -> dict[str, float] | None:
    """The meeting place's coordinates (GCJ-02, as Tencent maps and wx.getLocation give them), or None.

    Set, they make every member's check-in carry the phone's position.
    """
    given = {name: raw.get(name) not in (None, "") for name in ("latitude", "longitude")}
    lat = _coordinate(raw, "latitude", 90, errors)
    lng = _coordinate(raw, "longitude", 180, errors)
    if given["latitude"] != given["longitude"]:
        errors.append(FieldError("longitude" if given["latitude"] else "latitude", "经纬度应同时填写"))
    return {"lat": lat, "lng": lng} if lat is not None and lng is not None else None


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


def absent_count(meeting: dict[str, Any]) -> int:
    """Expected members neither present, online nor excused (never stored: derived)."""
    return meetings_model.absent_count(meeting)


async def get_meeting(ctx: AppContext, meeting_id: str | ObjectId) -> dict[str, Any]:
    meeting = await meetings_model.get(ctx.db, parse_id(meeting_id))
    if meeting is None:
        raise NotFound("meeting_not_found", "会议不存在")
    return meeting
