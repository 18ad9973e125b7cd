"""Management web: a branch's meetings, from the calendar to the minutes.

Pages (permission ``meeting.view`` to look, ``meeting.manage`` to act; the
services check both)::

    /admin/orgs/<org>/meetings?month=2026-03     calendar of a branch's month
    /admin/orgs/<org>/meetings/new               plan a meeting (a draft)
    /admin/meetings/<id>                         the meeting: actions, materials, codes,
                                                 leave requests, attendance, minutes
    /admin/meetings/<id>/edit
    /admin/meetings/<id>/screen (+ .json)        rotating check-in code for a projector
    /admin/meetings/<id>/board (+ .json)         live check-in board
    /admin/meetings/<id>/qr/oa.png | mp.png      codes to print: served from storage only
    POST /admin/meetings/<id>/<action>           publish, start, finish, cancel, minutes,
                                                 confirm-minutes, amend-minutes, leave,
                                                 checkin, materials, codes, renew-codes

The printed codes are made when the meeting is published (a job) or by the
POST ``codes`` (生成签到码); ``renew-codes`` (更换签到码) gives the meeting a
new secret so earlier printouts stop working. A GET never calls WeChat or
writes: a link on another site (SameSite=Lax sends the cookie with it) can at
most show the secretary their own stored image.

The two live pages poll their JSON with a few lines of plain JavaScript, so
the code changes and the board fills without reloading.

The planning form picks 指定党员 by name (checkboxes ``member_ids``, one value
each); for a large branch it searches by name instead (``member_q`` with the
button ``find_members``, which posts the form back to itself and saves nothing).
Its fields: ``type title topic place online_link start end reminder_minutes
agenda audience group_id member_ids allow_branch_members rotating_only latitude
longitude`` and, when the times are over, ``confirm_past`` (补录).
"""

from __future__ import annotations

import base64
import calendar
import functools
from datetime import date, timedelta
from typing import Any

import tornado.escape
import tornado.web

from handlers.admin_base import AdminHandler
from handlers.api.meetings import send_file
from handlers.base import OBJECT_ID
from models.enums import MEETING_TYPES
from wxbackend.clock import SHANGHAI
from wxbackend.errors import InvalidInput
from wxbackend.services import meetings, orgs
from wxbackend.services.meetings import audience, checkin, checkin_codes, printed_codes
from wxbackend.services.meetings.rules import secretary_actions

FORM_FIELDS = ("type", "title", "topic", "agenda", "place", "online_link", "start", "end",
               "reminder_minutes", "audience", "group_id", "latitude", "longitude")
FORM_CHECKBOXES = ("allow_branch_members", "rotating_only")
ACTIONS_DONE = {"publish": "已发布，参会党员将收到通知", "start": "会议已开始", "finish": "会议已结束",
                "cancel": "会议已取消，已通知参会党员", "minutes": "会议记录已保存",
                "confirm-minutes": "会议记录已确认", "amend-minutes": "修正已记录",
                "materials": "材料已上传", "leave": "已处理请假申请", "checkin": "已代签到",
                "codes": "签到码已生成", "renew-codes": "签到码已更换，此前打印的签到码已失效，请重新打印"}
BACKFILLED = "已作为补录发布：会议时间已过，未通知参会党员"


def _month(text: str, today: date) -> tuple[int, int]:
    """The month asked for ("2026-12"), or this month when none or a bad one is."""
    try:
        year, month = (int(p) for p in text.split("-"))
        date(year, month, 1)
        return year, month
    except (ValueError, TypeError):
        return today.year, today.month


class CalendarHandler(AdminHandler):
    @tornado.web.authenticated
    async def get(self, org_id: str) -> None:
        year, month = _month(self.get_query_argument("month", ""), self.ctx.clock.today())
        key = f"{year:04d}-{month:02d}"
        org, rows = await meetings.of_month(self.ctx, self.actor, org_id, key)
        by_day: dict[date, list[dict[str, Any]]] = {}
        for m in sorted(rows, key=lambda m: m["start"]):
            by_day.setdefault(m["start"].astimezone(SHANGHAI).date(), []).append(m)
        first = date(year, month, 1)
        self.render("admin/meetings.html", org=org, month=key, year=year, month_no=month,
                    weeks=calendar.Calendar().monthdatescalendar(year, month), by_day=by_day,
                    prev=(first - timedelta(days=1)).strftime("%Y-%m"),
                    next=(first + timedelta(days=32)).strftime("%Y-%m"),
                    status_label=functools.partial(meetings.status_label, now=self.ctx.clock.now()),
                    types=MEETING_TYPES, meetings_list=rows)


class FormMixin(AdminHandler):
    def form_values(self) -> dict[str, Any]:
        values: dict[str, Any] = {f: self.form(f) for f in FORM_FIELDS}
        for name in (*FORM_CHECKBOXES, "confirm_past"):
            values[name] = self.get_body_argument(name, "") == "on"
        # One checkbox a member; a value may still hold several ids separated by spaces.
        values["member_ids"] = [i for v in self.get_body_arguments("member_ids") for i in v.replace(",", " ").split()]
        values["member_q"] = self.form("member_q")
        return values

    def finding_members(self) -> bool:
        """查找 in a large branch's picker: show the form again with the matches, save nothing."""
        return bool(self.get_body_argument("find_members", ""))

    async def render_form(self, org: dict[str, Any], meeting: dict[str, Any] | None,
                          values: dict[str, Any], errors: dict[str, str]) -> None:
        choices = await audience.form_choices(
            self.ctx, self.actor, org, keep_type=meeting["type"] if meeting else None,
            keep_audience=(meeting or {}).get("audience", {}).get("kind"),
            picked=values.get("member_ids") or [], query=values.get("member_q") or "")
        self.render("admin/meeting_form.html", org=org, meeting=meeting, values=values, errors=errors,
                    choices=choices, picker=choices.picker)


def _errors(exc: InvalidInput) -> dict[str, str]:
    found = {d["field"]: d["message"] for d in exc.details or [] if isinstance(d, dict)}
    return found or {"_": exc.message}


def form_of(meeting: dict[str, Any]) -> dict[str, Any]:
    """A meeting as its form shows it (local times for datetime-local inputs)."""
    audience = meeting.get("audience") or {}
    return {**{f: meeting.get(f, "") for f in FORM_FIELDS},
            "start": meeting["start"].astimezone(SHANGHAI).strftime("%Y-%m-%dT%H:%M"),
            "end": meeting["end"].astimezone(SHANGHAI).strftime("%Y-%m-%dT%H:%M"),
            "audience": audience.get("kind", "branch"), "group_id": str(audience.get("group_id") or ""),
            "member_ids": [str(i) for i in audience.get("member_ids") or []],
            "reminder_minutes": meeting.get("reminder_minutes") or "",
            "latitude": (meeting.get("geo") or {}).get("lat", ""),
            "longitude": (meeting.get("geo") or {}).get("lng", ""),
            **{name: meeting.get(name, False) for name in FORM_CHECKBOXES}}


class MeetingNewHandler(FormMixin):
    @tornado.web.authenticated
    async def get(self, org_id: str) -> None:
        org = await orgs.view(self.ctx, self.actor, org_id)
        self.actor.require("meeting.manage", org["org_ancestors"])
        start = (self.ctx.clock.now().astimezone(SHANGHAI) + timedelta(days=7)).replace(hour=15, minute=0)
        await self.render_form(org, None, {"type": "theme_day", "audience": "branch",
                                           "start": start.strftime("%Y-%m-%dT%H:%M"),
                                           "end": (start + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")}, {})

    @tornado.web.authenticated
    async def post(self, org_id: str) -> None:
        org = await orgs.view(self.ctx, self.actor, org_id)
        values = self.form_values()
        if self.finding_members():
            await self.render_form(org, None, values, {})
            return
        try:
            meeting = await meetings.create(self.ctx, self.actor, org["_id"], values)
        except InvalidInput as exc:
            self.set_status(400)
            await self.render_form(org, None, values, _errors(exc))
            return
        saved = "已保存为补录草稿：会议时间已过，发布时不通知党员" if meeting["end"] <= self.ctx.clock.now() \
            else "已保存为草稿，发布后通知参会党员"
        self.redirect(f"/admin/meetings/{meeting['_id']}?msg=" + tornado.escape.url_escape(saved))


class MeetingEditHandler(FormMixin):
    @tornado.web.authenticated
    async def get(self, meeting_id: str) -> None:
        meeting = await meetings.view(self.ctx, self.actor, meeting_id)
        org = await orgs.get(self.ctx, meeting["org_id"])
        await self.render_form(org, meeting, form_of(meeting), {})

    @tornado.web.authenticated
    async def post(self, meeting_id: str) -> None:
        meeting = await meetings.view(self.ctx, self.actor, meeting_id)
        values = self.form_values()
        if self.finding_members():
            await self.render_form(await orgs.get(self.ctx, meeting["org_id"]), meeting, values, {})
            return
        try:
            await meetings.update(self.ctx, self.actor, meeting["_id"], values)
        except InvalidInput as exc:
            self.set_status(400)
            await self.render_form(await orgs.get(self.ctx, meeting["org_id"]), meeting, values, _errors(exc))
            return
        self.redirect(f"/admin/meetings/{meeting['_id']}?msg=" + tornado.escape.url_escape("已保存"))


class MeetingHandler(AdminHandler):
    @tornado.web.authenticated
    async def get(self, meeting_id: str) -> None:
        meeting = await meetings.view(self.ctx, self.actor, meeting_id)
        now = self.ctx.clock.now()
        org = await orgs.get(self.ctx, meeting["org_id"])
        meeting = await meetings.with_marks(self.ctx, meeting)  # marks are documents of their own
        names = await meetings.member_names(self.ctx, meeting)
        unmarked = sorted(((str(i), names.get(str(i), "")) for i in meeting.get("expected") or ()
                           if str(i) not in (meeting.get("attendance") or {})), key=lambda p: p[1])
        self.render("admin/meeting.html", meeting=meeting, org=org, types=MEETING_TYPES,
                    status=meetings.display_status(meeting, now), status_label=meetings.status_label(meeting, now),
                    leave=meetings.leave_requests(meeting, names), unmarked=unmarked,
                    absent=meetings.absent_count(meeting), minutes_text=meetings.current_minutes(meeting),
                    opens=meetings.checkin_opens_at(self.ctx, meeting), now=now,
                    actions=secretary_actions(meeting, now),
                    settings=self.ctx.settings.meetings, codes=printed_codes.codes_state(meeting, now))


class MeetingActionHandler(AdminHandler):
    """POST /admin/meetings/<id>/<action>: one small form each."""

    @tornado.web.authenticated
    async def post(self, meeting_id: str, action: str) -> None:
        ctx, actor = self.ctx, self.actor
        done = ACTIONS_DONE.get(action, "")
        if action == "publish":
            done = await self.publish(meeting_id)
        elif action in ("start", "finish"):
            await getattr(meetings, action)(ctx, actor, meeting_id)
        elif action == "cancel":
            await meetings.cancel(ctx, actor, meeting_id, self.form("reason"))
        elif action == "minutes":
            await meetings.record_minutes(ctx, actor, meeting_id, self.form("text"))
        elif action == "confirm-minutes":
            await meetings.confirm_minutes(ctx, actor, meeting_id)
        elif action == "amend-minutes":
            await meetings.amend_minutes(ctx, actor, meeting_id, self.form("text"), self.form("reason"))
        elif action == "leave":
            await meetings.decide_leave(ctx, actor, meeting_id, self.form("member_id"),
                                        self.form("decision") == "approve")
        elif action == "checkin":
            await checkin.manual_check_in(ctx, actor, meeting_id, self.form("member_id"))
        elif action in ("codes", "renew-codes"):
            await printed_codes.generate(ctx, actor, meeting_id, renew=action == "renew-codes")
        elif action == "materials":
            upload = (self.request.files.get("file") or [None])[0]
            if upload is None:
                raise InvalidInput("material_missing", "请选择要上传的文件")
            await meetings.add_material(ctx, actor, meeting_id, upload["filename"], upload["body"])
        else:
            raise tornado.web.HTTPError(404)
        self.redirect(f"/admin/meetings/{meeting_id}?msg=" + tornado.escape.url_escape(done))

    async def publish(self, meeting_id: str) -> str:
        """发布; a meeting already over only as a confirmed record (补录), which notifies nobody."""
        published = await meetings.publish(self.ctx, self.actor, meeting_id,
                                           confirm_past=self.get_body_argument("confirm_past", "") == "on")
        return BACKFILLED if published.get("backfilled") else ACTIONS_DONE["publish"]


class MaterialHandler(AdminHandler):
    @tornado.web.authenticated
    async def get(self, meeting_id: str, file_id: str) -> None:
        meeting = await meetings.view(self.ctx, self.actor, meeting_id)
        entry, stream = await meetings.open_material(self.ctx, meeting, file_id)
        await send_file(self, entry, stream)


class MaterialDeleteHandler(AdminHandler):
    @tornado.web.authenticated
    async def post(self, meeting_id: str, file_id: str) -> None:
        await meetings.remove_material(self.ctx, self.actor, meeting_id, file_id)
        self.redirect(f"/admin/meetings/{meeting_id}?msg=" + tornado.escape.url_escape("材料已删除"))


class QrHandler(AdminHandler):
    """Codes to print, as stored: the official account's (drawn locally from its URL), the mini-program's."""

    @tornado.web.authenticated
    async def get(self, meeting_id: str, which: str) -> None:
        image = await printed_codes.image(self.ctx, self.actor, meeting_id, which)
        self.set_header("Content-Type", "image/png")
        self.set_header("Content-Disposition", f'inline; filename="checkin-{which}-{meeting_id}.png"')
        self.finish(image)


def screen_state(ctx: Any, meeting: dict[str, Any]) -> dict[str, Any]:
    """What the projector shows now: the code (as a PNG data URI) and when it changes."""
    token = checkin_codes.rotating_token(ctx, meeting["_id"])
    png = base64.b64encode(checkin_codes.png(token, box_size=12)).decode()
    counts = meeting["counts"]
    return {"token": token, "image": "data:image/png;base64," + png,
            "refresh_in": checkin_codes.seconds_left(ctx), "present": counts["present"],
            "expected": meeting["expected_count"], "status": meetings.display_status(meeting, ctx.clock.now())}


class ScreenHandler(AdminHandler):
    @tornado.web.authenticated
    async def get(self, meeting_id: str, as_json: str | None) -> None:
        meeting = await meetings.view(self.ctx, self.actor, meeting_id)
        self.actor.require("meeting.manage", meeting["org_ancestors"])
        state = screen_state(self.ctx, meeting)
        if as_json:
            self.finish(state)
            return
        self.render("admin/meeting_screen.html", meeting=meeting, state=state)


class BoardHandler(AdminHandler):
    @tornado.web.authenticated
    async def get(self, meeting_id: str, as_json: str | None) -> None:
        data = await meetings.board(self.ctx, self.actor, meeting_id)
        if as_json:
            self.finish(data)
            return
        self.render("admin/meeting_board.html", meeting_id=meeting_id, data=data)


ROUTES = [
    (rf"/admin/orgs/({OBJECT_ID})/meetings", CalendarHandler),
    (rf"/admin/orgs/({OBJECT_ID})/meetings/new", MeetingNewHandler),
    (rf"/admin/meetings/({OBJECT_ID})", MeetingHandler),
    (rf"/admin/meetings/({OBJECT_ID})/edit", MeetingEditHandler),
    (rf"/admin/meetings/({OBJECT_ID})/(publish|start|finish|cancel|minutes|confirm-minutes|amend-minutes|leave"
     r"|checkin|materials|codes|renew-codes)", MeetingActionHandler),
    (rf"/admin/meetings/({OBJECT_ID})/materials/({OBJECT_ID})", MaterialHandler),
    (rf"/admin/meetings/({OBJECT_ID})/materials/({OBJECT_ID})/delete", MaterialDeleteHandler),
    (rf"/admin/meetings/({OBJECT_ID})/qr/(oa|mp)\.png", QrHandler),
    (rf"/admin/meetings/({OBJECT_ID})/screen(\.json)?", ScreenHandler),
    (rf"/admin/meetings/({OBJECT_ID})/board(\.json)?", BoardHandler),
]
