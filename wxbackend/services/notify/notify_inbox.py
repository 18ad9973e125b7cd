"""Inboxes: what a member (mini-program) and an admin user (management web) were sent.

The inbox is the outbox seen by its owner: the same ``notifications``
documents, newest first, with ``read_at``. It holds everything, including
what WeChat could not deliver::

    items, cursor = await member_inbox(ctx, member, cursor=None, limit=20)
    item = await member_read(ctx, member, notification_id)
    items, cursor = await user_inbox(ctx, actor, cursor=None)

Members also report which subscribe messages they granted in the
mini-program (:func:`grant`), which lets the notify service use that channel.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from models import notify_grants as grants_model
from wxbackend.context import AppContext
from wxbackend.errors import DomainError, Forbidden
from wxbackend.services import notify
from wxbackend.services.accounts.access import Actor
from wxbackend.services.notify import InboxItem, notices


async def member_inbox(ctx: AppContext, member: dict[str, Any], cursor: str | None,
                       limit: int) -> tuple[list[InboxItem], str | None]:
    return await notify.inbox(ctx, member["_id"], cursor, limit)


async def member_item(ctx: AppContext, member: dict[str, Any], notification_id: str
                      ) -> tuple[InboxItem, dict[str, Any] | None]:
    """One notification and, for a notice, the notice itself (its full text)."""
    item = await notify.inbox_item(ctx, member["_id"], notification_id)
    return item, await _notice_of(ctx, item)


async def member_read(ctx: AppContext, member: dict[str, Any], notification_id: str) -> InboxItem:
    return await notify.mark_read(ctx, member["_id"], notification_id)


async def _notice_of(ctx: AppContext, item: InboxItem) -> dict[str, Any] | None:
    notice_id = item.doc.get("notice_id")
    return await notices.body_of(ctx, notice_id) if notice_id else None


def _require_user(actor: Actor) -> ObjectId:
    if actor.system or actor.id is None:
        raise Forbidden("system_actor", "系统账号没有收件箱")
    return actor.id


async def user_inbox(ctx: AppContext, actor: Actor, cursor: str | None, limit: int = 30
                     ) -> tuple[list[InboxItem], str | None]:
    return await notify.inbox(ctx, _require_user(actor), cursor, limit)


async def user_open(ctx: AppContext, actor: Actor, notification_id: str
                    ) -> tuple[InboxItem, dict[str, Any] | None]:
    """An admin opens a notification: it is read from now on."""
    item = await notify.mark_read(ctx, _require_user(actor), notification_id)
    return item, await _notice_of(ctx, item)


# -- subscribe-message grants ------------------------------------------------------------

def _templates(ctx: AppContext) -> dict[str, list[notify.Kind]]:
    """Mini-program template id -> the kinds sent with it."""
    found: dict[str, list[notify.Kind]] = {}
    for kind in ctx.registry.kinds.values():
        template_id = notify.templates_of(ctx, kind).mp_template_id
        if template_id:
            found.setdefault(template_id, []).append(kind)
    return found


async def subscriptions(ctx: AppContext, member: dict[str, Any]) -> list[dict[str, Any]]:
    """Per kind: its template id and the grants the member has left for it."""
    templates = _templates(ctx)
    counts = await grants_model.for_member(ctx.db, member["_id"], list(templates))
    return [{"kind": kind.name, "title": kind.title, "template_id": template_id,
             "granted": counts.get(template_id, 0)}
            for template_id, kinds in sorted(templates.items()) for kind in kinds]


async def grant(ctx: AppContext, member: dict[str, Any], template_ids: list[str]) -> list[dict[str, Any]]:
    """The member accepted these templates in ``wx.requestSubscribeMessage`` (one grant each)."""
    known = _templates(ctx)
    unknown = sorted({t for t in template_ids if t not in known})
    if unknown:
        raise DomainError("unknown_template", "不是本平台的订阅消息模板：" + "、".join(unknown))
    await grants_model.add(ctx.db, member["_id"], list(dict.fromkeys(template_ids)), ctx.clock.now())
    return await subscriptions(ctx, member)
