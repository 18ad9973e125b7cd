"""What the organisations capability writes to the audit log, in Chinese.

Members are named only to a viewer who may see them (``member.view``): an entry
about a number registered elsewhere in the city must not tell who holds it.
Organisation names are no secret on the platform and are always named.
"""

from __future__ import annotations

from bson import ObjectId

from models import members as members_model
from models import orgs as orgs_model
from models.enums import MEMBER_STATES, ORG_CATEGORIES, ORG_TYPES
from wxbackend.context import AppContext
from wxbackend.services.accounts.access import Actor
from wxbackend.services.accounts.audit_labels import AuditAction, AuditSubject, Detail
from wxbackend.services.orgs.binding import CHANNEL_LABELS
from wxbackend.services.orgs.members import FIELD_LABELS

CHANNEL = Detail("渠道", CHANNEL_LABELS)
NUMBER_KINDS = {"id_card": "身份证号码", "phone": "手机号码"}
ENTERED_VIA = {"create": "新增党员", "update": "修改党员信息", "import": "导入党员"}


async def member_names(ctx: AppContext, viewer: Actor, ids: list[ObjectId]) -> dict[ObjectId, str]:
    found = await members_model.by_ids(ctx.db, ids, {"name": 1, "org_ancestors": 1})
    return {m["_id"]: m["name"] for m in found if viewer.can("member.view", m["org_ancestors"])}


async def org_names(ctx: AppContext, viewer: Actor, ids: list[ObjectId]) -> dict[ObjectId, str]:
    return {o["_id"]: o["name"] for o in await orgs_model.by_ids(ctx.db, ids, {"name": 1})}


ORG_ACTIONS = (
    AuditAction("org.create", "新建组织", {"type": Detail("组织类型", ORG_TYPES)}),
    AuditAction("org.rename", "组织更名", {"from": Detail("原名称"), "to": Detail("新名称")}),
    AuditAction("org.update", "修改组织信息", {
        "term_start": Detail("本届任期开始", {"None": "未填写"}),
        "term_years": Detail("任期", unit="年"),
        "category": Detail("组织类别", ORG_CATEGORIES),
        "secretary": Detail("书记"),
        "committee": Detail("委员"),
    }),
    AuditAction("org.move", "调整隶属关系", {"from": Detail("原上级组织", ref="org"),
                                         "to": Detail("新上级组织", ref="org")}),
    AuditAction("org.dissolve", "撤销组织"),
    AuditAction("org.upgrade", "组织升格", {"from": Detail("原类型", ORG_TYPES),
                                        "to": Detail("新类型", ORG_TYPES)}),
)

MEMBER_ACTIONS = (
    AuditAction("member.create", "新增党员"),
    AuditAction("member.update", "修改党员信息", {
        "fields": Detail("修改项", FIELD_LABELS),
        "how": Detail("方式", {"getPhoneNumber": "小程序中经微信验证手机号"}),
    }),
    AuditAction("member.state", "变更党员状态", {"from": Detail("原状态", MEMBER_STATES),
                                             "to": Detail("新状态", MEMBER_STATES)}),
    AuditAction("member.unmask", "查看完整个人信息", {"fields": Detail("查看项", FIELD_LABELS)}),
    AuditAction("member.import", "导入党员", {
        "created": Detail("新增", unit="人", quiet=(0,)), "updated": Detail("更新", unit="人", quiet=(0,)),
        "unchanged": Detail("无变化", unit="人", quiet=(0,)),
        "moved_out": Detail("调离本组织", unit="人", quiet=(0,)),
        "file": Detail("文件"), "partial": Detail("仅导入部分"),
    }),
    AuditAction("member.bind", "绑定微信", {
        "channel": CHANNEL,
        "via": Detail("方式", {"unionid": "本人已在另一渠道绑定，自动关联"}),
    }),
    AuditAction("member.unbind", "解除微信绑定", {"channel": CHANNEL}),
    AuditAction("member.lookup", "按证件号码或手机号码查找党员", {
        "by": Detail("查找依据", NUMBER_KINDS), "found": Detail("找到", unit="人"),
        "members": Detail("找到的党员", ref="member"),
    }),
    AuditAction("member.duplicate", "录入已登记的身份证号码", {
        "via": Detail("录入时", ENTERED_VIA), "found": Detail("已登记", unit="人"),
        "outside_scope": Detail("其中不在本人管辖范围", unit="人", quiet=(0,)),
        "members": Detail("已登记的党员", ref="member"),
    }),
)

ACTIONS = ORG_ACTIONS + MEMBER_ACTIONS

SUBJECTS = (
    AuditSubject("member", "党员", "/admin/members/{}", names=member_names,
                 unseen="{}名不在您管辖范围内的党员"),
    AuditSubject("org", "组织", "/admin/orgs/{}", names=org_names),
)
