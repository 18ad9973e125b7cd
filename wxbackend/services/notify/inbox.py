"""Everybody's inbox: an owner's notifications, newest first, and marking them read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bson import ObjectId

from models import notices as notices_model
from models import notifications as outbox_model
from models import notify_messages as messages_model
from wxbackend.context import AppContext
from wxbackend.errors import InvalidInput, NotFound, object_id

# -- inboxes -------------------------------------------------------------------------------

def parse_id(raw: str | ObjectId) -> ObjectId:
    return object_id(raw, "notification_not_found", "找不到该通知")


@dataclass
class InboxItem:
    doc: dict[str, Any]
    message: dict[str, Any]
    kind_title: str


def _inbox_item(ctx: AppContext, doc: dict[str, Any], message: dict[str, Any]) -> InboxItem:
    kind = ctx.registry.kinds.get(doc["kind"])
    return InboxItem(doc, message, kind.title if kind else doc["kind"])


async def inbox(ctx: AppContext, owner: ObjectId, cursor: str | None, limit: int
                ) -> tuple[list[InboxItem], str | None]:
    """An owner's notifications, newest first; ``cursor`` is the last id of the previous page.

    Reads all of the owner's notifications (a retention period's worth: tens to
    a few hundred) and pages in Python, which keeps the outbox to one index
    for the key and the inbox.
    """
    before = None
    if cursor:
        if not ObjectId.is_valid(cursor):
            raise InvalidInput("bad_cursor", "分页参数无效")
        before = ObjectId(cursor)
    docs = sorted((d for d in await outbox_model.of_owner(ctx.db, owner)
                   if before is None or d["_id"] < before), key=lambda d: d["_id"], reverse=True)
    messages = await messages_model.by_ids(ctx.db, [d["msg"] for d in docs[:limit]])
    items = [_inbox_item(ctx, d, messages.get(d["msg"], {})) for d in docs[:limit]]
    return items, (str(docs[limit - 1]["_id"]) if len(docs) > limit else None)


async def inbox_item(ctx: AppContext, owner: ObjectId, notification_id: str | ObjectId) -> InboxItem:
    doc = await outbox_model.get(ctx.db, parse_id(notification_id))
    if doc is None or doc["owner"] != owner:
        raise NotFound("notification_not_found", "找不到该通知")
    messages = await messages_model.by_ids(ctx.db, [doc["msg"]])
    return _inbox_item(ctx, doc, messages.get(doc["msg"], {}))


async def mark_read(ctx: AppContext, owner: ObjectId, notification_id: str | ObjectId) -> InboxItem:
    """The owner opened it; a notice counts one more reader the first time."""
    item = await inbox_item(ctx, owner, notification_id)
    now = ctx.clock.now()
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # as MongoDB keeps it
    if await outbox_model.mark_read(ctx.db, item.doc["_id"], owner, now):
        item.doc["read_at"] = now
        if item.doc.get("notice_id"):
            await notices_model.add_counts(ctx.db, item.doc["notice_id"], {"read": 1})
    return item
