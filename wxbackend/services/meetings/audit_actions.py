"""What the organisational-life capability writes to the audit log, in Chinese."""

from __future__ import annotations

from typing import Any

from models import meetings as meetings_model
from models.enums import MEETING_STATUSES
from wxbackend.context import AppContext
from wxbackend.services.accounts.access import Actor
from wxbackend.services.accounts.audit_labels import (
    HIDDEN,
    AuditAction,
    AuditSubject,
    Detail,
    size_text,
)
from wxbackend.services.meetings.rules import FIELD_LABELS

MEETING_FIELDS = {**FIELD_LABELS, "allow_branch_members": "允许本支部其他党员签到",
                  "rotating_only": "仅接受现场动态签到码", "geo": "会场位置"}
# The member a secretary acted for: named (and linked) from the id; the name stored beside it
# is what the entry said at the time, kept for investigators.
FOR_MEMBER = {"member_id": Detail("党员", ref="member"), "member": HIDDEN}
MEETING = Detail("会议", ref="meeting")


async def meeting_titles(ctx: AppContext, viewer: Actor, ids: list[Any]) -> dict[Any, str]:
    found = await meetings_model.by_ids(ctx.db, ids, {"title": 1, "org_ancestors": 1})
    return {m["_id"]: m["title"] for m in found if viewer.can("meeting.view", m["org_ancestors"])}


ACTIONS = (
    AuditAction("meeting.create", "新建会议"),
    AuditAction("meeting.update", "修改会议", {"fields": Detail("修改项", MEETING_FIELDS)}),
    AuditAction("meeting.publish", "发布会议", {"expected": Detail("应到", unit="人"),
                                            "backfilled": Detail("补录已召开的会议", quiet=(False,))}),
    AuditAction("meeting.cancel", "取消会议", {"from": Detail("取消前状态", MEETING_STATUSES)}),
    AuditAction("meeting.start", "开始会议"),
    AuditAction("meeting.finish", "结束会议", {"present": Detail("实到", unit="人")}),
    AuditAction("meeting.minutes", "填写会议记录", {"chars": Detail("字数", unit="字")}),
    AuditAction("meeting.minutes_confirm", "确认会议记录"),
    AuditAction("meeting.minutes_amend", "修正会议记录", {"chars": Detail("字数", unit="字")}),
    AuditAction("meeting.material_add", "上传会议材料",
                {"file": Detail("文件"), "size": Detail("大小", fmt=size_text)}),
    AuditAction("meeting.material_remove", "删除会议材料", {"file": Detail("文件")}),
    AuditAction("meeting.leave_approve", "批准请假", FOR_MEMBER),
    AuditAction("meeting.leave_refuse", "不批准请假", FOR_MEMBER),
    AuditAction("meeting.manual_checkin", "书记代为签到", FOR_MEMBER),
    AuditAction("meeting.checkin_codes_make", "生成签到码"),
    AuditAction("meeting.checkin_codes_renew", "更换签到码"),
    AuditAction("ledger.export", "导出工作台账",
                {"month": Detail("月份"), "meetings": Detail("会议", unit="次")}),
    AuditAction("comment.hide", "隐藏会议心得", {"meeting_id": MEETING}),
    AuditAction("vote.create", "发起表决", {"meeting_id": MEETING, "anonymous": Detail("无记名投票")}),
    AuditAction("vote.close", "结束表决", {"ballots": Detail("投票", unit="票")}),
)

SUBJECTS = (
    AuditSubject("meeting", "会议", "/admin/meetings/{}", names=meeting_titles),
    AuditSubject("vote", "表决"),
    AuditSubject("comment", "会议心得"),
)
