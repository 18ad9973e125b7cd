"""Comments (心得体会) on a meeting: written by attendees, moderated by the secretary.

Who may do what:

- read: a member who may see the meeting (its branch and its audience, the
  rule of ``meetings.for_member``); hidden comments are left out except the
  member's own, shown with the secretary's reason;
- write: a member who attended (present or online) a meeting that is under
  way or finished; excused and absent members may not;
- hide: the secretary (``meeting.manage``), with a reason; audited. Hiding is
  one conditional update, so hiding twice is one hide.

``comment_count`` on the meeting counts visible comments::

    comment = await comments.post(ctx, member, meeting_id, "这次学习收获很大……")
    rows, cursor = await comments.for_member(ctx, member, meeting_id, None, 20)
    await comments.hide(ctx, actor, comment["_id"], "含有与会议无关的广告")
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from bson.errors import InvalidId

from models import comments as model
from models import meetings as meetings_model
from wxbackend.context import AppContext
from wxbackend.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from wxbackend.services import meetings
from wxbackend.services.accounts import audit
from wxbackend.services.accounts.access import Actor

MAX_TEXT = 1000
MAX_REASON = 200
PAGE_SIZE = 20
ATTENDED = ("present", "online")
# Fields of the meeting the rules read (never the attendance map of a 1,200-member meeting).
MEETING_HEAD = {"org_id": 1, "org_ancestors": 1, "status": 1, "start": 1, "end": 1, "expected": 1,
                "allow_branch_members": 1, "title": 1}


def parse_id(raw: str | ObjectId, code: str = "comment_not_found", what: str = "评论") -> ObjectId:
    if isinstance(raw, ObjectId):
        return raw
    try:
        return ObjectId(raw)
    except (InvalidId, TypeError):
        raise NotFound(code, f"{what}不存在") from None


def attended(meeting: dict[str, Any], member: dict[str, Any]) -> bool:
    mark = (meeting.get("attendance") or {}).get(str(member["_id"]))
    return bool(mark) and mark.get("status") in ATTENDED


def require_attended(meeting: dict[str, Any], member: dict[str, Any], doing: str) -> None:
    if not attended(meeting, member):
        raise Forbidden("not_attendee", f"只有出席（含线上参会）本次会议的党员可以{doing}")


def own_mark(member: dict[str, Any]) -> dict[str, int]:
    """Projection: the meeting's rules and this member's mark, not the whole attendance map."""
    return {f"attendance.{member['_id']}": 1, **MEETING_HEAD}


def clean_text(text: str) -> str:
    text = (text or "").strip()
    if not text:
        raise InvalidInput("comment_empty", "心得内容不能为空")
    if len(text) > MAX_TEXT:
        raise InvalidInput("comment_too_long", f"心得内容不超过{MAX_TEXT}字")
    return text


async def post(ctx: AppContext, member: dict[str, Any], meeting_id: str | ObjectId,
               text: str) -> dict[str, Any]:
    """An attendee's comment; the meeting's comment_count moves with it."""
    text = clean_text(text)
    meeting = await meetings.for_member(ctx, member, meeting_id, own_mark(member))
    require_attended(meeting, member, "发表心得")
    if meetings.display_status(meeting, ctx.clock.now()) not in ("in_progress", "finished"):
        raise DomainError("meeting_not_held", "会议开始后才能发表心得")
    doc = {"_id": ObjectId(), "meeting_id": meeting["_id"], "org_id": meeting["org_id"],
           "org_ancestors": list(meeting["org_ancestors"]), "member_id": member["_id"],
           "name": member["name"], "text": text, "at": ctx.clock.now(), "hidden": False}
    await model.insert(ctx.db, doc)
    await meetings_model.update_one_if(ctx.db, meeting["_id"], {}, {"$inc": {"comment_count": 1}})
    return doc


def _cursor(raw: str | None) -> ObjectId | None:
    if not raw:
        return None
    try:
        return ObjectId(raw)
    except (InvalidId, TypeError):
        raise InvalidInput("bad_cursor", "分页参数无效") from None


async def _page(ctx: AppContext, meeting_id: ObjectId, cursor: str | None,
                limit: int) -> tuple[list[dict[str, Any]], str | None]:
    raw = await model.after(ctx.db, meeting_id, _cursor(cursor), limit + 1)
    more = len(raw) > limit
    raw = raw[:limit]
    return raw, (str(raw[-1]["_id"]) if more else None)


async def for_member(ctx: AppContext, member: dict[str, Any], meeting_id: str | ObjectId,
                     cursor: str | None = None, limit: int = PAGE_SIZE
                     ) -> tuple[list[dict[str, Any]], str | None]:
    """Visible comments (and the member's own hidden ones), oldest first."""
    meeting = await meetings.for_member(ctx, member, meeting_id, MEETING_HEAD)
    rows, next_cursor = await _page(ctx, meeting["_id"], cursor, limit)
    return [r for r in rows if not r["hidden"] or r["member_id"] == member["_id"]], next_cursor


async def for_admin(ctx: AppContext, actor: Actor, meeting_id: str | ObjectId,
                    cursor: str | None = None, limit: int = 100
                    ) -> tuple[list[dict[str, Any]], str | None]:
    """Every comment, hidden ones with their reason (management side)."""
    meeting = await meetings.view(ctx, actor, meeting_id)
    return await _page(ctx, meeting["_id"], cursor, limit)


async def hide(ctx: AppContext, actor: Actor, comment_id: str | ObjectId, reason: str) -> dict[str, Any]:
    """Hide a comment with a reason; hiding it again changes nothing."""
    comment = await model.get(ctx.db, parse_id(comment_id))
    if comment is None:
        raise NotFound("comment_not_found", "评论不存在")
    actor.require("meeting.manage", comment["org_ancestors"])
    reason = (reason or "").strip()
    if not reason or len(reason) > MAX_REASON:
        raise InvalidInput("hide_reason_required", f"请填写隐藏原因（不超过{MAX_REASON}字）")
    now = ctx.clock.now()
    hidden = await model.update_if(ctx.db, comment["_id"], {"hidden": False}, {"$set": {
        "hidden": True, "hidden_reason": reason, "hidden_by": actor.name, "hidden_at": now}})
    if hidden is None:
        current = await model.get(ctx.db, comment["_id"])
        if current is not None and current["hidden"]:
            return current
        raise Conflict("comment_changed", "评论已被修改，请刷新后重试")
    await meetings_model.update_one_if(ctx.db, comment["meeting_id"], {}, {"$inc": {"comment_count": -1}})
    await audit.record(ctx, actor, "comment.hide", "comment", comment["_id"], comment["name"],
                       comment["org_ancestors"], {"meeting_id": str(comment["meeting_id"]), "reason": reason})
    return hidden
