"""Audit log: every change and every view of unmasked personal data.

Called by services after their write succeeded, as pretix's
``log_action``::

    await audit.record(ctx, actor, "member.unmask", "member", member["_id"],
                       member["name"], member["org_ancestors"], {"fields": ["id_card"]})
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bson import ObjectId

from models import audit as audit_model
from models import orgs as orgs_model
from wxbackend.context import AppContext
from wxbackend.errors import InvalidInput, NotFound
from wxbackend.services.accounts.access import Actor

ACTION_LABELS = {
    "org.create": "新建组织", "org.rename": "组织更名", "org.move": "调整隶属关系",
    "org.dissolve": "撤销组织", "org.upgrade": "组织升格", "org.update": "修改组织信息",
    "member.create": "新增党员", "member.update": "修改党员信息", "member.unmask": "查看完整个人信息",
    "member.import": "导入党员", "member.bind": "绑定微信", "member.unbind": "解除微信绑定",
    "member.state": "变更党员状态",
    "member.lookup": "按证件号码或手机号码查找党员", "member.duplicate": "录入已登记的身份证号码",
    "user.create": "新建管理员", "user.login": "登录", "user.login_failed": "登录失败",
    "user.locked": "账号锁定",
    "user.password_change": "修改密码", "user.password_reset": "重置密码", "user.deactivate": "停用账号", "user.reactivate": "启用账号",
    "notice.send": "发布通知公告", "notification.retry": "重新发送消息", "notify.resume": "恢复消息发送",
}


async def record(ctx: AppContext, actor: Actor, action: str, target_type: str,
                 target_id: Any, label: str, org_ancestors: list[ObjectId],
                 details: dict[str, Any] | None = None) -> None:
    await audit_model.insert(ctx.db, {
        "at": ctx.clock.now(),
        "actor": {"id": actor.id, "name": actor.name},
        "ip": actor.ip,
        "action": action,
        "target": {"type": target_type, "id": target_id, "label": label},
        "org_id": org_ancestors[-1] if org_ancestors else None,
        "org_ancestors": list(org_ancestors),
        "details": details or {},
    })


async def page(ctx: AppContext, actor: Actor, scope_id: ObjectId, *, days: int = 7,
               before: ObjectId | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The audit log of one organisation subtree, newest first, over ``days`` days."""
    if not 1 <= days <= 366:
        raise InvalidInput("bad_days", "查询天数应在1到366之间")
    actor.require("audit.view", [scope_id] if actor.system else await _path(ctx, scope_id))
    since = ctx.clock.id_at(ctx.clock.now() - timedelta(days=days))
    return await audit_model.page(ctx.db, scope_id, before, since, limit)


async def _path(ctx: AppContext, org_id: ObjectId) -> list[ObjectId]:
    org = await orgs_model.get(ctx.db, org_id)
    if org is None:
        raise NotFound("org_not_found", "找不到该组织")
    return org["org_ancestors"]
