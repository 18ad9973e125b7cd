"""``/api/v1/meetings``: a member's meetings on the phone.

Upcoming and past meetings, a meeting's details, its materials, leave,
check-in (mini-program code or the rotating code on the screen) and online
attendance. Comments and votes live in their own module. Only meetings of the
member's own branch to which the member is invited are visible::

    GET  /api/v1/meetings?when=upcoming
    GET  /api/v1/meetings/{meeting_id}
    GET  /api/v1/meetings/{meeting_id}/materials/{file_id}
    POST /api/v1/meetings/{meeting_id}/leave      {"reason": "出差"}
    POST /api/v1/meetings/checkin                 {"scene": "<from the printed code>", "nonce": "..."}
    POST /api/v1/meetings/{meeting_id}/checkin    {"token": "<the screen's code>", "nonce": "..."}
    POST /api/v1/meetings/{meeting_id}/online

A check-in carries proof of being there (the screen's rotating code or the
printed code's scene, and the phone's position when the meeting has
coordinates); the meeting id alone is refused (``checkin_proof_required``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

import msgspec
from bson import ObjectId

from handlers.api.base import IDEMPOTENCY_KEY, ApiHandler, api_route, endpoint
from handlers.api.schemas import Cursor, Page, Schema
from handlers.base import OBJECT_ID
from models.enums import MEETING_TYPES
from wxbackend.errors import InvalidInput
from wxbackend.services import meetings
from wxbackend.services.meetings import checkin
from wxbackend.services.orgs import mpauth

NonceText = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$",
                                        description="客户端生成的扫码编号：同一次扫码重发时不变")]
STATE_LABELS = {"present": "已签到", "online": "线上参会", "excused": "请假（已批准）",
                "leave_pending": "请假待审批", "leave_refused": "请假未批准"}
LEAVE_LABELS = {"pending": "待审批", "approved": "已批准", "refused": "未批准", "withdrawn": "已撤回"}


class MeetingBrief(Schema):
    id: str
    title: str
    type: str
    type_label: str
    start: str
    end: str
    place: str
    status: str
    status_label: str
    has_online_link: bool
    my_state: str | None
    my_state_label: str | None


class Material(Schema):
    id: str
    name: str
    size: int
    content_type: str
    url: str


class Counts(Schema):
    expected: int
    present: int
    online: int
    excused: int


class LeaveView(Schema):
    status: str
    status_label: str
    reason: str
    at: str


class MeetingDetail(Schema):
    meeting: MeetingBrief
    topic: str
    agenda: str
    online_link: str
    organiser: str
    materials: list[Material]
    counts: Counts
    checkin_opens_at: str
    can_check_in: bool
    checkin_rotating_only: Annotated[bool, msgspec.Meta(description="只接受会场屏幕上的动态码（打印的签到码无效）")]
    checkin_location_required: Annotated[bool, msgspec.Meta(
        description="签到须同时提交手机位置（wx.getLocation，type 为 gcj02）")]
    leave: LeaveView | None
    comment_count: int
    vote_count: int


class ListQuery(Schema):
    when: Literal["upcoming", "past"] = "upcoming"
    limit: Annotated[int, msgspec.Meta(ge=1, le=50)] = 20
    cursor: Cursor | None = None


class LeaveRequest(Schema):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=200, description="请假事由")]


class Location(Schema):
    latitude: Annotated[float, msgspec.Meta(ge=-90, le=90, description="纬度（wx.getLocation，type 为 gcj02）")]
    longitude: Annotated[float, msgspec.Meta(ge=-180, le=180, description="经度（同上）")]


SceneText = Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Za-z_.:=-]{1,64}$",
                                        description="打印的小程序签到码的 scene（页面 onLoad 的 options.scene 解码后原样提交）")]
TokenText = Annotated[str, msgspec.Meta(max_length=80, description="会场屏幕动态码的内容（wx.scanCode 的 result）")]


class CheckinRequest(Schema):
    method: Literal["mp_code", "rotating"] | None = None
    token: TokenText | None = None
    scene: SceneText | None = None
    location: Location | None = None
    nonce: NonceText | None = None


class MeetingRef(Schema):
    id: str
    title: str


class CheckinView(Schema):
    code: Literal["checked_in", "already_checked_in"]
    message: str
    at: str
    how: str
    how_label: str
    meeting: MeetingRef


class OnlineView(Schema):
    recorded: bool
    state: str
    at: str
    online_link: str


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def brief(meeting: dict[str, Any], member_id: ObjectId, now: datetime) -> MeetingBrief:
    state = meetings.member_state(meeting, member_id)
    status = meetings.display_status(meeting, now)
    return MeetingBrief(
        id=str(meeting["_id"]), title=meeting["title"], type=meeting["type"],
        type_label=MEETING_TYPES.get(meeting["type"], meeting["type"]), start=iso(meeting["start"]),
        end=iso(meeting["end"]), place=meeting.get("place") or "", status=status,
        status_label=meetings.status_label(meeting, now), has_online_link=bool(meeting.get("online_link")),
        my_state=state, my_state_label=STATE_LABELS.get(state) if state else None)


def _before(cursor: str | None) -> datetime | None:
    if cursor is None:
        return None
    if not cursor.isdigit() or len(cursor) > 15:
        raise InvalidInput("bad_cursor", "分页参数无效")
    return datetime.fromtimestamp(int(cursor) / 1000, UTC)


class MeetingsHandler(ApiHandler):
    @endpoint("我的会议（即将召开 / 往期）", query=ListQuery, response=Page[MeetingBrief], bound=True,
              tags=("meetings",), description="即将召开的按开始时间先后排列；往期按时间倒序，用 next_cursor 翻页。")
    async def get(self, query: ListQuery) -> Page[MeetingBrief]:
        member = await mpauth.current_member(self.ctx, self.session)
        now = self.ctx.clock.now()
        rows = await meetings.member_meetings(self.ctx, member, query.when, before=_before(query.cursor),
                                              limit=query.limit + 1, now=now)
        more = query.when == "past" and len(rows) > query.limit
        rows = rows[:query.limit]
        cursor = str(int(rows[-1]["start"].timestamp() * 1000)) if more else None
        return Page(items=[brief(m, member["_id"], now) for m in rows], next_cursor=cursor)


class MeetingHandler(ApiHandler):
    @endpoint("会议详情", response=MeetingDetail, bound=True, errors=(404,), tags=("meetings",))
    async def get(self, meeting_id: str) -> MeetingDetail:
        member = await mpauth.current_member(self.ctx, self.session)
        meeting = await meetings.for_member(self.ctx, member, meeting_id, meetings.detail_fields(member["_id"]))
        return detail(self, meeting, member["_id"])


def detail(handler: ApiHandler, meeting: dict[str, Any], member_id: ObjectId) -> MeetingDetail:
    now = handler.ctx.clock.now()
    counts = meeting.get("counts") or {}
    opens = meetings.checkin_opens_at(handler.ctx, meeting)
    leave = (meeting.get("leave") or {}).get(str(member_id))
    base = f"/api/v1/meetings/{meeting['_id']}/materials/"
    return MeetingDetail(
        meeting=brief(meeting, member_id, now), topic=meeting.get("topic") or "",
        agenda=meeting.get("agenda") or "", online_link=meeting.get("online_link") or "",
        organiser=(meeting.get("organiser") or {}).get("name") or "",
        materials=[Material(id=str(m["file_id"]), name=m["name"], size=m["size"],
                            content_type=m["content_type"], url=base + str(m["file_id"]))
                   for m in meeting.get("materials") or []],
        counts=Counts(expected=meeting.get("expected_count", 0), present=counts.get("present", 0),
                      online=counts.get("online", 0), excused=counts.get("excused", 0)),
        checkin_opens_at=iso(opens),
        can_check_in=meetings.can_check_in(handler.ctx, meeting, member_id, now),
        checkin_rotating_only=bool(meeting.get("rotating_only")),
        checkin_location_required=bool(meeting.get("geo")),
        leave=leave_view(leave) if leave else None,
        comment_count=meeting.get("comment_count", 0), vote_count=meeting.get("vote_count", 0))


class MaterialHandler(ApiHandler):
    @endpoint("下载会议材料", bound=True, errors=(404,), tags=("meetings",),
              raw_response="application/octet-stream")
    async def get(self, meeting_id: str, file_id: str) -> None:
        member = await mpauth.current_member(self.ctx, self.session)
        meeting = await meetings.for_member(self.ctx, member, meeting_id,
                                            {"org_id": 1, "status": 1, "expected": 1,
                                             "allow_branch_members": 1, "materials": 1})
        entry, stream = await meetings.open_material(self.ctx, meeting, file_id)
        await send_file(self, entry, stream)


async def send_file(handler: Any, entry: dict[str, Any], stream: Any) -> None:
    """Stream a GridFS file chunk by chunk (materials are megabytes, not kilobytes)."""
    handler.set_header("Content-Type", entry["content_type"])
    handler.set_header("Content-Length", str(entry["size"]))
    handler.set_header("Content-Disposition", f"attachment; filename*=UTF-8''{quote(entry['name'])}")
    handler.set_header("X-Content-Type-Options", "nosniff")
    while chunk := await stream.readchunk():
        handler.write(chunk)
        await handler.flush()
    handler.finish()


class LeaveHandler(ApiHandler):
    @endpoint("请假", request=LeaveRequest, response=LeaveView, bound=True, idempotent=True,
              errors=(404, 409, 422), tags=("meetings",),
              description="会议开始前提交；书记批准后计为请假（不计缺席）。重复提交返回同一申请。")
    async def post(self, meeting_id: str, body: LeaveRequest) -> LeaveView:
        member = await mpauth.current_member(self.ctx, self.session)
        leave = await meetings.request_leave(self.ctx, member, meeting_id, body.reason)
        return leave_view(leave)

    @endpoint("撤回请假", response=LeaveView, bound=True, errors=(404, 409, 422), tags=("meetings",),
              description="会议开始前撤回自己的请假申请；已批准的撤回后不再计为请假。重复撤回返回同一结果。")
    async def delete(self, meeting_id: str) -> LeaveView:
        member = await mpauth.current_member(self.ctx, self.session)
        return leave_view(await meetings.withdraw_leave(self.ctx, member, meeting_id))


def leave_view(leave: dict[str, Any]) -> LeaveView:
    return LeaveView(status=leave["status"], status_label=LEAVE_LABELS[leave["status"]],
                     reason=leave["reason"], at=iso(leave["at"]))


CHECKIN_WAYS = (
    "到会凭证（二选一）：① 会场屏幕上的动态码：{\"token\": 扫码结果}，每30秒更换，当前和上一个有效；"
    "② 打印的小程序签到码：{\"scene\": 页面参数 scene}，书记设为“仅动态码”的会议不接受（checkin_rotating_only）。"
    "只有会议编号、不带凭证的请求答复 checkin_proof_required；签到码不对或已被书记更换答复 checkin_code_invalid；"
    "动态码过期答复 checkin_token_expired。会议详情 checkin_location_required 为 true 时须同时提交 location"
    "（wx.getLocation，type 为 gcj02），缺少答复 checkin_location_required，离会场过远答复 checkin_too_far。"
    "公众号签到二维码在微信里扫（签到结果由公众号回复），不经本接口；书记代签在管理后台。"
    "同一次扫码请带同一 nonce（或 Idempotency-Key 请求头）：重发得到同一答复，只记一次签到。"
    "已签到的再次签到答复 already_checked_in 和首次签到时间。")


class CheckinMixin(ApiHandler):
    async def check_in(self, meeting_id: str | None, body: CheckinRequest) -> CheckinView:
        location = (body.location.latitude, body.location.longitude) if body.location else None
        result = await checkin.check_in_session(self.ctx, self.session, meeting_id, body.method,
                                                token=body.token, scene=body.scene, location=location,
                                                nonce=self._nonce(body))
        return CheckinView(code=result.code, message=result.message, at=iso(result.at), how=result.how,
                           how_label=checkin.HOW_LABELS[result.how],
                           meeting=MeetingRef(id=str(result.meeting_id), title=result.title))

    def _nonce(self, body: CheckinRequest) -> str | None:
        # A header nonce, checked like the API's idempotency keys; the body's wins.
        header = self.request.headers.get("Idempotency-Key")
        if body.nonce or header is None:
            return body.nonce
        if not IDEMPOTENCY_KEY.match(header):
            raise InvalidInput("bad_idempotency_key", "Idempotency-Key 应为1-64位字母、数字、下划线或连字符")
        return header


class CheckinHandler(CheckinMixin):
    @endpoint("签到（已知会议）", request=CheckinRequest, response=CheckinView, bound=True, errors=(404, 422),
              tags=("meetings",),
              description="在会议页面扫码签到：凭证须属于路径中的会议，否则答复 checkin_code_invalid。" + CHECKIN_WAYS)
    async def post(self, meeting_id: str, body: CheckinRequest) -> CheckinView:
        return await self.check_in(meeting_id, body)


class ScanCheckinHandler(CheckinMixin):
    @endpoint("扫码签到", request=CheckinRequest, response=CheckinView, bound=True, errors=(404, 422),
              tags=("meetings",),
              description="小程序签到码打开的页面（或扫屏幕动态码后）直接调用：会议由凭证确定，无需会议编号。"
              + CHECKIN_WAYS)
    async def post(self, body: CheckinRequest) -> CheckinView:
        return await self.check_in(None, body)


class OnlineHandler(ApiHandler):
    @endpoint("线上参会", response=OnlineView, bound=True, errors=(404, 422), tags=("meetings",),
              description="只对设有线上会议链接的会议（has_online_link），且只在会议开始到结束之间："
              "记为线上参会（已签到、已请假的保持原记录），返回会议链接。没有链接答复 meeting_not_online，"
              "不在会议时间内答复 meeting_not_in_progress。")
    async def post(self, meeting_id: str) -> OnlineView:
        member = await mpauth.current_member(self.ctx, self.session)
        joined = await meetings.join_online(self.ctx, member, meeting_id)
        return OnlineView(recorded=joined["recorded"], state=joined["mark"]["status"],
                          at=iso(joined["mark"]["at"]), online_link=joined["online_link"])


ROUTES = [
    api_route("/api/v1/meetings", MeetingsHandler),
    api_route("/api/v1/meetings/checkin", ScanCheckinHandler),
    api_route("/api/v1/meetings/{meeting_id}", MeetingHandler, meeting_id=OBJECT_ID),
    api_route("/api/v1/meetings/{meeting_id}/materials/{file_id}", MaterialHandler, meeting_id=OBJECT_ID, file_id=OBJECT_ID),
    api_route("/api/v1/meetings/{meeting_id}/leave", LeaveHandler, meeting_id=OBJECT_ID),
    api_route("/api/v1/meetings/{meeting_id}/checkin", CheckinHandler, meeting_id=OBJECT_ID),
    api_route("/api/v1/meetings/{meeting_id}/online", OnlineHandler, meeting_id=OBJECT_ID),
]
