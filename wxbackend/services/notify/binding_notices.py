"""Telling secretaries about attacks on binding: the kinds, and the job binding queues.

Binding (the organisations capability) sees the attack but lies below this
capability, so it cannot call :func:`~wxbackend.services.notify.notify`. It
queues the job ``binding_alert`` by name with member ids only; this module
declares that job and the two kinds, and sends::

    # in services/orgs/binding.py
    await jobs.enqueue(ctx, "binding_alert", "locked", "oa", [str(member_id)], int(now.timestamp()))

- ``binding_locked``: wrong tries naming a member used up the per-name limit,
  so binding with that name is locked (``[wechat] bind_target_lockout_seconds``);
- ``binding_attempt_bound_elsewhere``: somebody gave a member's right name and
  ID-card number (and phone) to bind another WeChat account while the member is
  bound. They were answered as a wrong try; either the member changed phones
  (unbind the old one) or somebody else holds their data.

Recipients: the management-web users who may unbind the member
(``member.unbind``) at the nearest organisation up from the member's branch
that has one (the branch secretary, else the committee above). Each notice
links to the member's page in the management web; the subject makes a repeat
of the same event (or a second bound-elsewhere notice on the same day) a no-op.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId

from models import notify_recipients as recipients_model
from wxbackend import jobs
from wxbackend.clock import SHANGHAI
from wxbackend.context import AppContext
from wxbackend.services import notify
from wxbackend.services.accounts.access import PERMISSIONS
from wxbackend.services.notify import Kind, Recipient

log = logging.getLogger(__name__)

CHANNEL_LABELS = {"oa": "公众号", "mp": "小程序"}
# Roles whose holders can act on the notice (unbind, correct the record).
ACTING_ROLES = frozenset(role for role, granted in PERMISSIONS.items() if "member.unbind" in granted)

LOCKED = Kind(
    name="binding_locked", title="微信绑定已锁定", template_setting="binding_locked",
    fields={"thing1": "{member}", "thing2": "{what}", "time3": "{at}"},
    required=("member", "channel", "hours", "at"), link="/admin/members/{member_id}",
    summary="有人多次以“{member}”的姓名绑定{channel}，身份信息均不正确；该姓名的绑定已锁定{hours}小时。"
            "如是本人，请核对其档案中的身份证号码和手机号码；如不是，其姓名可能被人冒用。")
BOUND_ELSEWHERE = Kind(
    name="binding_attempt_bound_elsewhere", title="已绑定党员被尝试再次绑定",
    template_setting="binding_attempt_bound_elsewhere",
    fields={"thing1": "{member}", "thing2": "{what}", "time3": "{at}"},
    required=("member", "channel", "at"), link="/admin/members/{member_id}",
    summary="有人填写了{member}正确的姓名和身份证号码，试图将其绑定到另一个{channel}账号，未予绑定。"
            "如是本人更换了微信，请解除原绑定后让其重新绑定；如不是，其身份信息可能已泄露，请提醒本人。")
KINDS = (LOCKED, BOUND_ELSEWHERE)
EVENTS = {"locked": LOCKED, "bound_elsewhere": BOUND_ELSEWHERE}


@jobs.job(name="binding_alert")
async def binding_alert(ctx: AppContext, event: str, channel: str, member_ids: list[str],
                        at: int) -> int:
    """Tell the secretaries of each member about ``event``; the notices created."""
    kind = EVENTS.get(event)
    if kind is None:
        log.warning("binding alert: unknown event %r", event)
        return 0
    try:
        ids = [ObjectId(i) for i in member_ids]
    except (InvalidId, TypeError):
        log.warning("binding alert: bad member ids")
        return 0
    moment = datetime.fromtimestamp(at, UTC)
    created = 0
    for member in await recipients_model.members_by_ids(ctx.db, ids):
        users = await acting_users(ctx, member["org_ancestors"])
        if not users:
            log.warning("binding alert %s: nobody to tell", event, extra={"fields": {
                "member_id": str(member["_id"])}})
            continue
        data = _data(ctx, kind, member, channel, moment)
        result = await notify.notify(ctx, [Recipient(user_id=u) for u in users], kind.name, data,
                              subject=_subject(event, channel, member["_id"], moment))
        created += result.created
    return created


async def acting_users(ctx: AppContext, org_ancestors: list[ObjectId]) -> list[ObjectId]:
    """Active users who may unbind members there, at the nearest organisation up that has any."""
    for org_id in reversed(org_ancestors):
        found = [u["_id"] for u in await recipients_model.users_with_roles_in(ctx.db, [org_id])
                 if u.get("active", True) and any(
                     r["role"] in ACTING_ROLES and r["org_id"] == org_id for r in u.get("roles", []))]
        if found:
            return found
    return []


def _data(ctx: AppContext, kind: Kind, member: dict[str, Any], channel: str,
          moment: datetime) -> dict[str, Any]:
    label = CHANNEL_LABELS.get(channel, channel)
    hours = max(1, ctx.settings.wechat.bind_target_lockout_seconds // 3600)
    what = f"{label}绑定已锁定{hours}小时" if kind is LOCKED else f"被尝试绑定另一个{label}账号"
    return {"member": member["name"], "member_id": str(member["_id"]), "channel": label,
            "hours": hours, "what": what, "at": moment}


def _subject(event: str, channel: str, member_id: ObjectId, moment: datetime) -> str:
    if event == "locked":  # one lock, one notice
        return f"binding:locked:{channel}:{member_id}:{int(moment.timestamp())}"
    day = moment.astimezone(SHANGHAI).date().isoformat()
    return f"binding:bound_elsewhere:{channel}:{member_id}:{day}"
