"""What the notifications capability writes to the audit log, in Chinese."""

from __future__ import annotations

from typing import Any

from wxbackend.context import AppContext
from wxbackend.services.accounts.access import Actor
from wxbackend.services.accounts.audit_labels import AuditAction, AuditSubject, Detail
from wxbackend.services.notify.notices import AUDIENCES
from wxbackend.services.notify.notify_delivery import API_LABELS
from wxbackend.services.notify.outbox import CHANNEL_LABELS


async def kind_titles(ctx: AppContext, viewer: Actor, names: list[Any]) -> dict[Any, str]:
    """Notification kinds by their titles, from whichever capability declares each."""
    kinds = ctx.registry.kinds
    return {name: kinds[name].title for name in names if name in kinds}


ACTIONS = (
    AuditAction("notice.send", "发布通知公告", {"audience": Detail("发送对象", AUDIENCES)}),
    AuditAction("notification.retry", "重新发送消息", {
        "kind": Detail("消息类型", ref="notification_kind"),
        "errcode": Detail("上次失败的微信错误码"),
        "channel": Detail("本次发送渠道", CHANNEL_LABELS),
    }),
    AuditAction("notify.resume", "恢复消息发送", {"api": Detail("接口", API_LABELS)}),
)

SUBJECTS = (
    AuditSubject("notice", "通知公告", "/admin/notices/{}"),
    AuditSubject("notification", "消息"),
    AuditSubject("queue", "消息发送接口"),
    AuditSubject("notification_kind", "消息类型", names=kind_titles),
)
