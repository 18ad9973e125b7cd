"""The meetings capability on the official account: 会议, and scanning a meeting's QR code."""

from __future__ import annotations

from typing import Any

from models.enums import MEETING_TYPES
from wxbackend.capability import ChatRoute
from wxbackend.clock import SHANGHAI
from wxbackend.context import AppContext
from wxbackend.errors import DomainError
from wxbackend.services.meetings import checkin, checkin_codes
from wxbackend.services.meetings.attendance import member_meetings, member_state
from wxbackend.services.orgs import binding
from wxbackend.services.orgs.chat import NOT_BOUND, bind_link
from wxbackend.wechat.router import Inbound, Reply, Text


async def upcoming_text(ctx: AppContext, member: dict[str, Any], limit: int = 5) -> str:
    """The chat answer to 会议: the member's next meetings, their time, place and own state."""
    if member.get("state", "active") != "active":
        return "您的党籍状态不是“正常”，暂无组织生活安排。"
    now = ctx.clock.now()
    rows = await member_meetings(ctx, member, "upcoming", limit=limit, now=now)
    if not rows:
        return "近期没有需要您参加的会议。"
    lines = ["您近期的组织生活："]
    for m in rows:
        start = m["start"].astimezone(SHANGHAI)
        state = {"present": "（已签到）", "online": "（线上参会）", "excused": "（已请假）",
                 "leave_pending": "（请假待批）"}.get(member_state(m, member["_id"]) or "", "")
        lines.append(f"· {start:%m月%d日 %H:%M} {MEETING_TYPES.get(m['type'], '')}：{m['title']}"
                     f"，{m.get('place') or '线上'}{state}")
    lines.append("到会后扫描会场签到码即可签到；请假请在小程序中提交。")
    return "\n".join(lines)


async def on_checkin_scan(ctx: AppContext, msg: Inbound) -> Reply:
    # The meeting's QR code (SCAN, or subscribe with qrscene_): check in, say how it went.
    return Text(await oa_scan(ctx, msg.openid, msg.scene or "", f"oa:{msg.create_time}"))


async def on_meetings(ctx: AppContext, msg: Inbound) -> Reply:
    member = await binding.member_for(ctx, "oa", msg.openid)
    if member is None:
        return Text(f"{NOT_BOUND}{bind_link(ctx)}")
    return Text(await upcoming_text(ctx, member))


async def oa_scan(ctx: AppContext, openid: str, scene: str, nonce: str) -> str:
    """The chat answer to a scan of the official-account code ``checkin:<meeting>.<secret>``.

    WeChat delivers the scene of the code actually scanned; its secret is the
    proof (a code printed before secrets existed, ``checkin:<meeting>``, is refused).
    """
    member = await binding.member_for(ctx, "oa", openid)
    if member is None:
        return f"您还没有绑定党员身份，绑定后即可扫码签到：{bind_link(ctx)}"
    try:
        meeting_id, secret = checkin_codes.parse_scene(scene)
        result = await checkin.check_in(ctx, meeting_id, member, "oa_qr", nonce=nonce,
                                        proof=checkin.Proof(secret=secret or ""))
    except DomainError as exc:
        return f"签到未成功：{exc.message}"
    return result.message

CHAT = (
    ChatRoute.keyword("会议", on_meetings, help="查看近期组织生活会议"),
    ChatRoute.scene_prefix(checkin_codes.SCENE_PREFIX, on_checkin_scan),
)
