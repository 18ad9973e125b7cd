"""The outbox as admins see it: filtered pages, counts per day, retries, queue health.

Scoped like everything on the management side: an admin sees the
notifications of recipients inside their subtree::

    page = await outbox.page(ctx, actor, district_id, day="2025-03-01", status="failed")
    rows = await outbox.day_counts(ctx, actor, district_id)
    await outbox.retry(ctx, actor, notification_id)
    health = await outbox.health(ctx)

SecantusDB reads every document a query matches, so a page never asks for a
whole day of a big subtree: it reads one status inside a time window sized
from the day's maintained counters (about 200 notifications), widening it
only where the day is sparse. Failed and undeliverable notifications (what
admins act on) have an index of their own per subtree; queued and sent ones
are read from the city-wide time index and filtered to the subtree, which is
quick for big subtrees and pages slowly through a busy day for a small one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from bson import ObjectId

from models import notices as notices_model
from models import notifications as outbox_model
from models import notify_batches as batches_model
from models import notify_grants as grants_model
from models import notify_messages as messages_model
from models import notify_recipients as recipients_model
from models import notify_stats as stats_model
from wxbackend import jobs
from wxbackend.clock import SHANGHAI
from wxbackend.context import AppContext
from wxbackend.errors import Conflict, Forbidden, InvalidInput, NotFound
from wxbackend.services import notify, orgs
from wxbackend.services.accounts import audit
from wxbackend.services.accounts.access import Actor
from wxbackend.services.notify import notify_delivery
from wxbackend.wechat import errors as wechat_errors

PAGE_SIZE = 50
DAYS_SHOWN = 14
# A window holds about this many notifications of the day (from the counters).
WINDOW_TARGET = 200
MAX_WINDOWS = 8
# Most rows one window of the city-wide time index may read.
WINDOW_LIMIT = 1000
STATUS_LABELS = {"failed": "失败", "undeliverable": "仅站内", "queued": "排队中", "sent": "已送达"}
CHANNEL_LABELS = {"oa": "公众号", "mp": "小程序", "web": "管理平台", "inbox": "站内"}
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass
class OutboxPage:
    org: dict[str, Any]
    day: str
    status: str
    kind: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    messages: dict[ObjectId, dict[str, Any]] = field(default_factory=dict)
    next_cursor: str | None = None


def _day_bounds(day: str) -> tuple[datetime, datetime]:
    if not DAY.match(day or ""):
        raise InvalidInput("bad_day", "日期格式应为 YYYY-MM-DD")
    try:
        start = datetime.combine(date.fromisoformat(day), time(), SHANGHAI)
    except ValueError:
        raise InvalidInput("bad_day", "日期无效") from None
    return start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC)


async def page(ctx: AppContext, actor: Actor, scope_id: ObjectId, *, day: str = "",
               status: str = "failed", kind: str = "", cursor: str | None = None,
               limit: int = PAGE_SIZE) -> OutboxPage:
    """One page of a day's notifications of one status in a subtree, newest first."""
    org = await orgs.get(ctx, scope_id)
    actor.require("outbox.view", org["org_ancestors"])
    day, status = day or ctx.clock.today().isoformat(), status or "failed"
    if status not in outbox_model.STATUSES:
        raise InvalidInput("bad_status", "状态无效")
    start, end = _day_bounds(day)
    result = OutboxPage(org, day, status, kind)
    if status in outbox_model.SCOPED:
        await _scoped_page(ctx, result, start, end, cursor, limit)
    else:
        await _timed_page(ctx, result, start, end, cursor, limit)
    result.messages = await messages_model.by_ids(ctx.db, [r["msg"] for r in result.rows])
    return result


async def _day_count(ctx: AppContext, org_id: ObjectId, day: str, status: str) -> int:
    counted = (await stats_model.for_org(ctx.db, org_id, [day])).get(day, {})
    if status == "queued":
        return counted.get("total", 0) - sum(counted.get(f, 0) for f in outbox_model.FINAL)
    return counted.get(status, 0)


async def _scoped_page(ctx: AppContext, result: OutboxPage, start: datetime, end: datetime,
                       cursor: str | None, limit: int) -> None:
    """Failed / undeliverable: the subtree's own (sparse) index, by id (creation time)."""
    low, high = ctx.clock.id_at(start), ctx.clock.id_at(end)
    if cursor:
        if not ObjectId.is_valid(cursor):
            raise InvalidInput("bad_cursor", "分页参数无效")
        high = min(high, ObjectId(cursor))
    count = await _day_count(ctx, result.org["_id"], result.day, result.status)
    window = max(60.0, 86400.0 * WINDOW_TARGET / max(count, 1))
    for _ in range(MAX_WINDOWS):
        if high <= low:
            return
        w_low = max(low, ObjectId.from_datetime(high.generation_time - timedelta(seconds=window)))
        want = limit - len(result.rows)
        found = await outbox_model.scoped_window(ctx.db, result.org["_id"], result.status, w_low,
                                                 high, want + 1)
        read = found[:want]
        # org_ancestors, not scope, is rewritten when an organisation moves.
        result.rows.extend(r for r in read if (not result.kind or r["kind"] == result.kind)
                           and result.org["_id"] in (r.get("org_ancestors") or []))
        if read and (len(found) > want or len(result.rows) >= limit):
            result.next_cursor = str(read[-1]["_id"])  # go on below the last row read
            return
        high, window = w_low, window * 4  # a sparse stretch: look further back
    result.next_cursor = str(high) if high > low else None


async def _timed_page(ctx: AppContext, result: OutboxPage, start: datetime, end: datetime,
                      cursor: str | None, limit: int) -> None:
    """Queued / sent: the city-wide time index, keeping the subtree's, by ``next_at``.

    ``cursor`` is ``<next_at ms>-<id>`` of the last row shown (ties are common:
    a group is settled at one instant).
    """
    high, after_id = end, None
    if cursor:
        stamp, _, last = cursor.partition("-")
        if not stamp.isdigit() or not ObjectId.is_valid(last):
            raise InvalidInput("bad_cursor", "分页参数无效")
        high = min(end, datetime.fromtimestamp(int(stamp) / 1000, UTC))
        after_id = ObjectId(last)
    root = result.org["org_ancestors"][0]
    count = await _day_count(ctx, root, result.day, result.status)
    window = max(1.0, 86400.0 * WINDOW_TARGET / max(count, 1))
    scope = result.org["_id"]
    for _ in range(MAX_WINDOWS):
        if high <= start:
            return
        w_low = max(start, high - timedelta(seconds=window))
        # Including `high` itself (ms ties with the cursor row), then dropping what was shown.
        found = await outbox_model.timed_window(ctx.db, result.status, w_low,
                                                high + timedelta(milliseconds=1), WINDOW_LIMIT)
        found = [r for r in found if after_id is None or _before(r, high, after_id)]
        found.sort(key=lambda r: (r["next_at"], r["_id"]), reverse=True)
        mine = [r for r in found if scope in (r.get("org_ancestors") or [])
                and (not result.kind or r["kind"] == result.kind)]
        take = mine[:limit - len(result.rows)]
        result.rows.extend(take)
        if len(result.rows) >= limit or len(found) >= WINDOW_LIMIT:
            last = result.rows[-1] if take else found[-1]
            result.next_cursor = f"{int(last['next_at'].timestamp() * 1000)}-{last['_id']}"
            return
        high, after_id, window = w_low, None, window * 4
    result.next_cursor = f"{int(high.timestamp() * 1000)}-{'f' * 24}" if high > start else None


def _before(row: dict[str, Any], high: datetime, after_id: ObjectId) -> bool:
    """Strictly after the cursor row in newest-first order."""
    stamp = int(row["next_at"].timestamp() * 1000)
    edge = int(high.timestamp() * 1000)
    return stamp < edge or (stamp == edge and row["_id"] < after_id)


async def day_counts(ctx: AppContext, actor: Actor, scope_id: ObjectId,
                     days: int = DAYS_SHOWN) -> list[dict[str, Any]]:
    """Counts per day (newest first) of the subtree's notifications, by outcome."""
    org = await orgs.get(ctx, scope_id)
    actor.require("outbox.view", org["org_ancestors"])
    today = ctx.clock.today()
    names = [(today - timedelta(days=i)).isoformat() for i in range(days)]
    found = await stats_model.for_org(ctx.db, org["_id"], names)
    rows = []
    for day in names:
        doc = found.get(day, {})
        counts = {f: doc.get(f, 0) for f in stats_model.FIELDS}
        counts["queued"] = counts["total"] - counts["sent"] - counts["failed"] - counts["undeliverable"]
        rows.append({"day": day, **counts})
    return rows


# -- retry ---------------------------------------------------------------------------------

async def retry(ctx: AppContext, actor: Actor, notification_id: str | ObjectId) -> dict[str, Any]:
    """An admin sends a failed notification again, by whatever channel works now."""
    doc = await outbox_model.get(ctx.db, notify.parse_id(notification_id))
    if doc is None:
        raise NotFound("notification_not_found", "找不到该通知")
    actor.require("outbox.retry", doc["org_ancestors"])
    if doc["status"] != "failed":
        raise Conflict("not_failed", "只有发送失败的通知可以重新发送")
    message = (await messages_model.by_ids(ctx.db, [doc["msg"]])).get(doc["msg"], {})
    channel, openid = await _channel_now(ctx, doc, message)
    if not retry_helps(doc) and (channel, openid) == (doc.get("channel"), doc.get("openid")):
        advice = failure_advice(doc)
        raise Conflict("retry_cannot_help", f"重新发送不会成功：{advice}")
    now = ctx.clock.now()
    status = "queued" if openid else ("sent" if channel == "web" else "undeliverable")
    changes = {"status": status, "channel": channel, "openid": openid, "attempts": 0,
               "next_at": now, "errcode": None, "errmsg": f"{actor.name}重新发送"}
    if status == "sent":
        changes["sent_at"] = now
    update: dict[str, Any] = {"$set": changes}
    if status == "undeliverable":
        changes["scope"] = doc["org_ancestors"]
    else:
        update["$unset"] = {"scope": ""}
    updated = await outbox_model.update_if(ctx.db, doc["_id"], {"status": "failed"}, update)
    if updated is None:
        raise Conflict("notification_changed", "该通知刚刚被其他人处理过，请刷新")
    await _recount(ctx, doc, status)
    if status == "queued":
        batches = notify.make_batches(ctx, [doc["_id"]], prefix=f"deliver:again:{ObjectId()}")
        await batches_model.insert_many(ctx.db, batches)
        await notify.enqueue_batches(ctx, batches)
    await audit.record(ctx, actor, "notification.retry", "notification", doc["_id"],
                       message.get("title", doc["kind"]), doc["org_ancestors"],
                       {"kind": doc["kind"], "errcode": doc.get("errcode"), "channel": channel})
    return updated


def failure_advice(doc: dict[str, Any]) -> wechat_errors.Advice | None:
    """WeChat's errcode of a notification in Chinese (None: no errcode, e.g. our own message)."""
    errcode = doc.get("errcode")
    return None if errcode is None else wechat_errors.explain(errcode)


def retry_helps(doc: dict[str, Any]) -> bool:
    """Whether sending a failed notification again to the same recipient can succeed:
    not after a permanent failure (40003, 40037 ...), unless the member has rebound
    since, which :func:`retry` checks."""
    advice = failure_advice(doc)
    return doc["status"] == "failed" and (advice is None or advice.retry_helps)


async def _channel_now(ctx: AppContext, doc: dict[str, Any], message: dict[str, Any]
                       ) -> tuple[str, str | None]:
    """The channel a notification can take today (the member may have followed since)."""
    if doc["owner_type"] == "user":
        users = await recipients_model.users_by_ids(ctx.db, [doc["owner"]])
        member_id = users[0].get("member_id") if users else None
        if not member_id:
            return "web", None
        doc = {**doc, "owner": member_id}
    members = await recipients_model.members_by_ids(ctx.db, [doc["owner"]])
    member = members[0] if members else {}
    if message.get("oa") and member.get("oa_openid") and member.get("oa_following", True):
        return "oa", member["oa_openid"]
    if message.get("mp") and member.get("mp_openid"):
        left = await grants_model.counts(ctx.db, [member["_id"]], message["mp"]["template_id"])
        if left:
            return "mp", member["mp_openid"]
    return ("web", None) if doc["owner_type"] == "user" else ("inbox", None)


async def _recount(ctx: AppContext, doc: dict[str, Any], status: str) -> None:
    delta = {"failed": -1}
    if status in ("sent", "undeliverable"):
        delta[status] = 1
    await stats_model.add(ctx.db, {(doc["day"], org): dict(delta) for org in doc["org_ancestors"]})
    if doc.get("notice_id"):
        names = {"sent": "delivered", "undeliverable": "inbox"}
        notice_delta = {"failed": -1}
        if status in names:
            notice_delta[names[status]] = 1
        await notices_model.add_counts(ctx.db, doc["notice_id"], notice_delta)


# -- health ---------------------------------------------------------------------------------

async def health(ctx: AppContext) -> dict[str, Any]:
    """The queue's state for the management web: depth, workers, failures, paused APIs."""
    queue = await jobs.queue_health(ctx)
    return {"queue": queue, "failures": await jobs.recent_failures(ctx),
            "paused": await notify_delivery.paused_apis(ctx)}


async def resume(ctx: AppContext, actor: Actor, api: str) -> None:
    """Lift a quota pause (city administrators only: it affects the whole city)."""
    if "city_admin" not in actor.role_names:
        raise Forbidden("permission_denied", "只有市级管理员可以恢复发送")
    if api not in notify_delivery.API_LABELS:
        raise InvalidInput("bad_api", "接口无效")
    await notify_delivery.resume(ctx, api)
    await audit.record(ctx, actor, "notify.resume", "queue", api, notify_delivery.API_LABELS[api], [],
                       {"api": api})
