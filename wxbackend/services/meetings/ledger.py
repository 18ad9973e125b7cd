"""Work ledger (工作台账): every meeting of a branch, month by month, and its export.

A ledger entry is a meeting with its attendance (present, online, excused,
absent), minutes (with amendments), materials, comments and votes; a higher
committee opens the entries of its subtree (``meeting.view``). The month's
ledger is one indexed query on ``(org_id, month)``; names come from one
point-lookup query for the members involved::

    book = await ledger.month(ctx, actor, branch_id, "2026-03")
    entry = await ledger.entry(ctx, actor, meeting_id)
    data = await ledger.export_xlsx(ctx, actor, branch_id, "2026-03")   # .xlsx bytes
    sheet = await ledger.member_year(ctx, actor, member_id, 2026)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bson import ObjectId

from models import meetings as meetings_model
from models import members as members_model
from models.enums import MEETING_STATUSES, MEETING_TYPES
from wxbackend import spreadsheet
from wxbackend.clock import SHANGHAI
from wxbackend.context import AppContext
from wxbackend.services import meetings, orgs
from wxbackend.services.accounts import audit
from wxbackend.services.accounts.access import Actor
from wxbackend.services.meetings import comments, compliance, votes
from wxbackend.services.orgs import members

ATTENDANCE_LABELS = {"present": "出席", "online": "线上参会", "excused": "请假", "absent": "缺席"}
HOW_LABELS = {"oa_qr": "公众号扫码", "mp_code": "小程序码", "rotating": "现场动态码",
              "manual": "书记代签", "online": "线上参会", "leave": "请假"}
# What a month's list needs: no attendance maps (a 1,200-member meeting's is ~100 kB).
MONTH_FIELDS = {**meetings_model.LIST_FIELDS, "minutes": 1, "materials": 1}


@dataclass
class MonthLedger:
    org: dict[str, Any]
    month: str
    meetings: list[dict[str, Any]]
    status: compliance.BranchStatus


@dataclass
class AttendanceRow:
    member_id: ObjectId
    name: str
    status: str              # present | online | excused | absent
    how: str = ""
    at: datetime | None = None
    reason: str = ""         # of an approved leave

    @property
    def label(self) -> str:
        return ATTENDANCE_LABELS[self.status]


@dataclass
class Entry:
    meeting: dict[str, Any]
    rows: list[AttendanceRow]
    comments: list[dict[str, Any]] = field(default_factory=list)
    votes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def minutes(self) -> str:
        return meetings.current_minutes(self.meeting)


def absent(meeting: dict[str, Any]) -> int:
    return meetings_model.absent_count(meeting)


def type_label(meeting: dict[str, Any]) -> str:
    return MEETING_TYPES.get(meeting["type"], meeting["type"])


def status_label(meeting: dict[str, Any]) -> str:
    return MEETING_STATUSES.get(meeting["status"], meeting["status"])


async def month(ctx: AppContext, actor: Actor, org_id: ObjectId | str, month_key: str) -> MonthLedger:
    org = await orgs.get(ctx, orgs.parse_id(org_id))
    actor.require("meeting.view", org["org_ancestors"])
    month_key = compliance.parse_month(month_key)
    found = await meetings_model.in_org_month(ctx.db, org["_id"], month_key, MONTH_FIELDS)
    found = [m for m in found if m["status"] != "draft"]  # drafts are not yet part of the record
    found.sort(key=lambda m: m["start"])
    status = await compliance.branch_status(ctx, actor, org["_id"], month_key)
    return MonthLedger(org, month_key, found, status)


async def _names(ctx: AppContext, org_id: ObjectId, member_ids: set[ObjectId]) -> dict[ObjectId, str]:
    """Names of a meeting's people: the branch's members by ``org_id`` (one index range),
    then the few who have left the branch by id. SecantusDB answers an ``_id $in`` of
    1,200 ids in ~5 s against ~0.2 s for the branch's 1,200 members by ``org_id``."""
    if not member_ids:
        return {}
    rows = await members_model.in_orgs(ctx.db, [org_id], {"name": 1})
    names = {r["_id"]: r["name"] for r in rows if r["_id"] in member_ids}
    gone = list(member_ids - names.keys())
    if gone:
        cursor = ctx.db[members_model.COLLECTION].find({"_id": {"$in": gone}}, {"name": 1})
        names.update({d["_id"]: d["name"] async for d in cursor})
    return names


def _ids(meeting: dict[str, Any]) -> set[ObjectId]:
    marked = {ObjectId(k) for k in (meeting.get("attendance") or {})}
    return set(meeting.get("expected") or ()) | marked


def attendance_rows(meeting: dict[str, Any], names: dict[ObjectId, str]) -> list[AttendanceRow]:
    """Everybody expected or marked, with the mark (or absent); marked first, then by name."""
    marks = meeting.get("attendance") or {}
    leave = meeting.get("leave") or {}
    rows = []
    for member_id in _ids(meeting):
        mark = marks.get(str(member_id))
        rows.append(AttendanceRow(
            member_id, names.get(member_id, "（已不在册）"), mark["status"] if mark else "absent",
            (mark or {}).get("how", ""), (mark or {}).get("at"),
            (leave.get(str(member_id)) or {}).get("reason", "") if mark else ""))
    order = list(ATTENDANCE_LABELS)
    rows.sort(key=lambda r: (order.index(r.status), r.name))
    return rows


async def entry(ctx: AppContext, actor: Actor, meeting_id: ObjectId | str) -> Entry:
    """One ledger entry: the whole record of a meeting."""
    meeting = await meetings_model.with_marks(ctx.db, await meetings.view(ctx, actor, meeting_id))
    rows = attendance_rows(meeting, await _names(ctx, meeting["org_id"], _ids(meeting)))
    found, _ = await comments.for_admin(ctx, actor, meeting["_id"], None, 200)
    return Entry(meeting, rows, found, await votes.of_meeting_for_admin(ctx, actor, meeting["_id"]))


# -- one member's year -------------------------------------------------------------

@dataclass
class MemberYear:
    member: dict[str, Any]
    year: int
    rows: list[tuple[dict[str, Any], str]]   # (meeting, status), newest first

    def count(self, status: str) -> int:
        return sum(1 for _, s in self.rows if s == status)

    @property
    def rate(self) -> float | None:
        held = [s for _, s in self.rows if s in ATTENDANCE_LABELS]
        return compliance.attendance_rate(sum(1 for s in held if s in ("present", "online")), len(held),
                                          sum(1 for s in held if s == "excused"))


async def member_year(ctx: AppContext, actor: Actor, member_id: ObjectId | str, year: int) -> MemberYear:
    """A member's attendance over a year: the meetings of their branch that expected them
    (12 indexed month queries, each projecting only this member's mark)."""
    member = await members.get_visible(ctx, actor, member_id)
    actor.require("meeting.view", member["org_ancestors"])
    key = str(member["_id"])
    fields = {**meetings_model.LIST_FIELDS, "expected": 1, f"attendance.{key}": 1}
    rows = []
    for m in range(12, 0, -1):
        found = await meetings_model.in_org_month(ctx.db, member["org_id"], f"{year:04d}-{m:02d}", fields)
        for meeting in sorted(found, key=lambda x: x["start"], reverse=True):
            mark = (meeting.get("attendance") or {}).get(key)
            if mark is None and member["_id"] not in set(meeting.get("expected") or ()):
                continue
            if meeting["status"] in ("draft", "cancelled"):
                continue
            status = mark["status"] if mark else ("absent" if meeting["status"] == "finished" else "pending")
            rows.append((meeting, status))
    return MemberYear(member, year, rows)


# -- Excel ---------------------------------------------------------------------------

def _local(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return value.astimezone(SHANGHAI).strftime(fmt) if value else ""


async def export_xlsx(ctx: AppContext, actor: Actor, org_id: ObjectId | str, month_key: str) -> tuple[str, bytes]:
    """(file name, .xlsx bytes) of a branch's month: meetings, attendance, minutes."""
    book_data = await month(ctx, actor, org_id, month_key)
    full = [await meetings_model.get(ctx.db, m["_id"]) for m in book_data.meetings]
    full = [await meetings_model.with_marks(ctx.db, m) for m in full if m is not None]
    names = await _names(ctx, book_data.org["_id"], set().union(*(_ids(m) for m in full)) if full else set())
    # Writing a big branch's month (~15,000 attendance rows) takes seconds of CPU:
    # in a thread, so the server keeps answering meanwhile.
    data = await asyncio.to_thread(_workbook, full, names)
    org = book_data.org
    await audit.record(ctx, actor, "ledger.export", "org", org["_id"], org["name"], org["org_ancestors"],
                       {"month": book_data.month, "meetings": len(full)})
    return f"{org['code']}-{book_data.month}-工作台账.xlsx", data


def _workbook(full: list[dict[str, Any]], names: dict[ObjectId, str]) -> bytes:
    # Titles, places, names, leave reasons, minutes and file names are typed by
    # secretaries and members: spreadsheet.sheet writes them as text, never formulas.
    book = spreadsheet.new_book()
    spreadsheet.sheet(book, "会议台账", ["日期", "时间", "会议类型", "会议名称", "主题", "地点", "状态", "应到",
                                     "出席", "线上", "请假", "缺席", "出勤率", "会议记录", "材料", "心得", "表决"],
                      [_meeting_row(m) for m in full],
                      [12, 12, 12, 28, 24, 16, 8, 6, 6, 6, 6, 6, 8, 40, 24, 6, 6], first=True)
    spreadsheet.sheet(book, "出勤明细", ["日期", "会议名称", "党员", "出勤情况", "签到方式", "签到时间", "请假事由"],
                      [[_local(m["start"], "%Y-%m-%d"), m["title"], r.name, r.label, HOW_LABELS.get(r.how, r.how),
                        _local(r.at), r.reason] for m in full for r in attendance_rows(m, names)],
                      [12, 28, 12, 10, 12, 18, 30])
    spreadsheet.sheet(book, "会议记录", ["日期", "会议名称", "记录人", "确认人", "会议记录（含修正）"],
                      [[_local(m["start"], "%Y-%m-%d"), m["title"], (m.get("minutes") or {}).get("recorded_by", ""),
                        (m.get("minutes") or {}).get("confirmed_by", ""), meetings.current_minutes(m)] for m in full],
                      [12, 28, 12, 12, 80], wrap=(5,))
    return spreadsheet.save(book)


def _meeting_row(m: dict[str, Any]) -> list[Any]:
    counts = m.get("counts") or {}
    rate = compliance.attendance_rate(counts.get("present", 0) + counts.get("online", 0),
                                      m.get("expected_count", 0), counts.get("excused", 0))
    return [_local(m["start"], "%Y-%m-%d"), f"{_local(m['start'], '%H:%M')}-{_local(m['end'], '%H:%M')}",
            type_label(m), m["title"], m.get("topic", ""), m.get("place", ""), status_label(m),
            m.get("expected_count", 0), counts.get("present", 0), counts.get("online", 0),
            counts.get("excused", 0), absent(m), f"{rate:.0%}" if rate is not None else "",
            meetings.current_minutes(m)[:200], "、".join(x["name"] for x in m.get("materials") or []),
            m.get("comment_count", 0), m.get("vote_count", 0)]
