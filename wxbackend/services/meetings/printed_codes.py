"""The printed check-in codes: made on publication or by the secretary, then only served.

Calling WeChat spends the account's quota and writes to the meeting, so no GET
does it: publishing queues the job :func:`make_codes` (``meeting_checkin_codes``),
and the meeting page's 生成签到码 (a POST behind XSRF) makes whatever is still
missing, e.g. when WeChat was down. 更换签到码 gives the meeting a new secret,
so codes printed before (a photo sent round) stop working. The printable
images are served from storage, to the secretary only, never for a draft::

    await queue_codes(ctx, meeting)                   # after publish (never raises)
    await generate(ctx, actor, meeting_id)            # the POST
    await generate(ctx, actor, meeting_id, renew=True)
    image = await image(ctx, actor, meeting_id, "mp")  # the GET: stored PNG or NotFound

Refusals: ``meeting_not_published``, ``meeting_not_open``, ``checkin_codes_missing``,
``checkin_code_expired``, ``wechat_unavailable``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from bson import ObjectId

from models import meetings as meetings_model
from wxbackend import jobs
from wxbackend.context import AppContext
from wxbackend.errors import Conflict, DomainError, NotFound, Unavailable
from wxbackend.services.accounts import audit
from wxbackend.services.accounts.access import Actor
from wxbackend.services.meetings import checkin, checkin_codes
from wxbackend.services.meetings.rules import get_meeting

log = logging.getLogger(__name__)

# Seconds before the job tries WeChat again (arq's max_tries bounds the attempts).
RETRY_SECONDS = 60


def job_id(meeting_id: ObjectId) -> str:
    return f"meeting_codes:{meeting_id}"


async def queue_codes(ctx: AppContext, meeting: dict[str, Any]) -> None:
    """Have the worker make the meeting's codes; a failure is logged, the page offers the POST."""
    try:
        await jobs.enqueue(ctx, "meeting_checkin_codes", str(meeting["_id"]), _job_id=job_id(meeting["_id"]))
    except Exception:  # Redis down: publishing stands, 生成签到码 does it by hand
        log.exception("meeting %s: check-in codes not queued", meeting["_id"])


@jobs.job(name="meeting_checkin_codes", max_tries=5, timeout=60)
async def make_codes(ctx: AppContext, meeting_id: str) -> str:
    """The job: make what is missing for a published, open meeting (idempotent)."""
    meeting = await meetings_model.get(ctx.db, ObjectId(meeting_id))
    if meeting is None or meeting["status"] not in meetings_model.OPEN_STATUSES:
        return "skipped"
    meeting = await _with_secret(ctx, meeting)
    try:
        await checkin_codes.ensure_codes(ctx, meeting)
    except Unavailable:
        raise jobs.Retry(defer=RETRY_SECONDS) from None
    return "made"


async def _with_secret(ctx: AppContext, meeting: dict[str, Any], renew: bool = False) -> dict[str, Any]:
    """The meeting with a (new) secret; codes of the old one, or of none, are dropped with it.

    A meeting saved before printed codes carried a secret has none: its codes
    (``checkin:<id>``, ``m=<id>``) go the same way as a renewal's.
    """
    old = meeting.get("checkin_secret")
    if old and not renew:
        return meeting
    secret = meetings_model.new_checkin_secret()
    changed = await meetings_model.update_if(ctx.db, meeting["_id"], {"checkin_secret": old},
                                             {"$set": {"checkin_secret": secret, "qr": {}}})
    if changed is None:
        raise Conflict("meeting_changed", "签到码刚被他人更换，请刷新后重试")
    checkin.forget(ctx, meeting["_id"])
    file_id = (meeting.get("qr") or {}).get("mp_code_file_id")
    if file_id is not None:
        await meetings_model.delete_file(ctx.db, file_id)
    return changed


async def _manageable(ctx: AppContext, actor: Actor, meeting_id: str | ObjectId) -> dict[str, Any]:
    meeting = await get_meeting(ctx, meeting_id)
    actor.require("meeting.manage", meeting["org_ancestors"])
    return meeting


async def generate(ctx: AppContext, actor: Actor, meeting_id: str | ObjectId, *,
                   renew: bool = False) -> dict[str, Any]:
    """生成签到码 (what is missing) or 更换签到码 (``renew``: a new secret, new codes); audited."""
    meeting = await _manageable(ctx, actor, meeting_id)
    if meeting["status"] == "draft":
        raise DomainError("meeting_not_published", "会议尚未发布：发布时自动生成签到码")
    if meeting["status"] not in meetings_model.OPEN_STATUSES:
        raise DomainError("meeting_not_open", "会议已结束或已取消，不再需要签到码")
    meeting = await _with_secret(ctx, meeting, renew)
    qr = await checkin_codes.ensure_codes(ctx, meeting)
    await audit.record(ctx, actor, "meeting.checkin_codes_" + ("renew" if renew else "make"), "meeting",
                       meeting["_id"], meeting["title"], meeting["org_ancestors"])
    return qr


async def image(ctx: AppContext, actor: Actor, meeting_id: str | ObjectId, which: str,
                now: datetime | None = None) -> bytes:
    """A stored printable code (``oa`` or ``mp``) as PNG; nothing is made here."""
    meeting = await _manageable(ctx, actor, meeting_id)
    if meeting["status"] == "draft":
        raise NotFound("meeting_not_published", "会议尚未发布：发布后生成签到码")
    if meeting["status"] not in meetings_model.OPEN_STATUSES:
        raise NotFound("meeting_not_open", "会议已结束或已取消，签到码不再提供")
    qr = meeting.get("qr") or {}
    missing = NotFound("checkin_codes_missing", "签到码尚未生成：请在会议页面点击“生成签到码”")
    if which == "oa":
        if not qr.get("oa_url"):
            raise missing
        if qr["oa_expires_at"] <= (now or ctx.clock.now()):
            raise NotFound("checkin_code_expired", "公众号签到二维码已过期：请在会议页面点击“生成签到码”")
        return checkin_codes.oa_qr_png(meeting)
    found = await checkin_codes.mp_code_png(ctx, meeting)
    if found is None:
        raise missing
    return found


def codes_state(meeting: dict[str, Any], now: datetime) -> dict[str, Any]:
    """What the meeting page says about the printed codes (no secret in it)."""
    qr = meeting.get("qr") or {}
    expires = qr.get("oa_expires_at")
    return {"oa": bool(qr.get("oa_url")) and expires is not None and expires > now,
            "oa_expires_at": expires, "oa_expires_early": bool(expires and expires < meeting["end"]),
            "mp": qr.get("mp_code_file_id") is not None, "made_at": qr.get("made_at"),
            "legacy": not meeting.get("checkin_secret")}
