"""Workers deliver queued notifications: rate limits, quota pauses, retries, recovery.

The ``deliver`` job takes a batch of outbox ids and, a group of ``[notify]
send_group`` at a time:

0. (a planned batch of a big fan-out) writes the batch's outbox documents;
1. reserves tokens from the Redis token bucket of the appid and API
   (``[notify] oa_template_rate`` / ``mp_subscribe_rate`` per second), and
   waits for them *before* claiming anything;
2. claims the group: a Redis key per notification, ``SET NX`` with a lease
   (``[notify] lease_seconds``), so no other worker can send them, then reads
   them back and keeps those still ``queued``;
3. sends them to WeChat at once;
4. settles each in MongoDB (``queued -> sent | failed | undeliverable``, or
   ``queued`` for later) with WeChat's errcode, releases the claims, and
   updates the counters.

The claim lives in Redis because SecantusDB rewrites every index entry of a
document on each update: a ``sending`` state would double the writes per
notification, the cost that bounds the delivery rate.

What WeChat answers decides the outcome:

- 45009 (daily quota): that appid+API is paused until the next midnight in
  Asia/Shanghai (a Redis key expiring then); the notification and the rest of
  the batch wait, queued, for a job deferred to that time.
- 43101 (no subscribe grant), 43004 (not a follower: recorded on the member),
  40003, 40037 and other rule errors: ``failed`` at once, no retry.
- 40001/42001: the client has refreshed the token and retried once already;
  if WeChat still refuses, the notification is retried later like -1.
- -1 and network errors (timeouts): the client retried ``[wechat]
  api_retries`` times; then the notification goes back to ``queued`` with
  exponential backoff (``[notify] retry_backoff_seconds``) until ``[notify]
  max_attempts``, then ``failed`` with the last errcode.

Exactly once: a notification is sent only by the worker holding its claim,
and only while MongoDB still says ``queued``; a crash anywhere except between
WeChat accepting a message and our ``sent`` write leaves it ``queued`` (sent
again, once) or ``sent`` (not again). In that one window, a few milliseconds
per group, a killed worker leaves a claimed, unsettled notification; WeChat's
template and subscribe APIs take no client message id to ask about, so when
the claim's lease runs out the next run sends it again: at-least-once for at
most ``send_group`` notifications per killed worker, never silently lost (it
stays in the recipient's inbox whatever WeChat did). Tokens are reserved
before the claim, so a worker waiting on the rate limit (most of its time)
holds no claim. A Redis that loses its last second of writes can lose live
claims too; only a job running at that moment on the same notifications
(recovery never starts one while the first is alive) could then send twice.

Recovery (cron ``outbox_recovery``) re-enqueues batches whose job Redis
lost (``models.notify_batches``), and the ``prune`` job deletes ended
notifications after ``[notify] retention_days``::

    await deliver(ctx, ["65f0...", ...])        # what a worker runs
    await recover(ctx)                          # what the cron runs every minute
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId

from models import notices as notices_model
from models import notifications as outbox_model
from models import notify_batches as batches_model
from models import notify_grants as grants_model
from models import notify_messages as messages_model
from models import notify_stats as stats_model
from wxbackend import jobs, tokenbucket
from wxbackend.clock import SHANGHAI
from wxbackend.context import AppContext
from wxbackend.services import notify
from wxbackend.wechat.client import mp_client, oa_client
from wxbackend.wechat.errors import (
    AccessTokenExpired,
    InvalidCredential,
    QuotaExceeded,
    RequireSubscribe,
    UserNotSubscribed,
    WeChatError,
)

log = logging.getLogger("wxbackend.notify")

API_OA = "oa_template"
API_MP = "mp_subscribe"
API_LABELS = {API_OA: "公众号模板消息", API_MP: "小程序订阅消息"}
PAUSE_KEY = "notify:pause:"      # + appid:api; expires at the next midnight
BUCKET_KEY = "notify:bucket:"    # + appid:api
CLAIM_KEY = "notify:claim:"      # + outbox id: the worker sending it (with a lease)
# A batch whose job keeps getting lost or failing is given up after this many recoveries.
MAX_RECOVERIES = 10


def api_of(doc: dict[str, Any]) -> str:
    return API_OA if doc["channel"] == "oa" else API_MP


def _appid(ctx: AppContext, api: str) -> str:
    return ctx.settings.wechat.oa_appid if api == API_OA else ctx.settings.wechat.mp_appid


# -- quota pauses ------------------------------------------------------------------------

def next_midnight(now: datetime) -> datetime:
    """The next 00:00 in Asia/Shanghai after ``now``, when WeChat's daily quotas start again (UTC)."""
    local = now.astimezone(SHANGHAI)
    tomorrow = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return tomorrow.astimezone(UTC)


async def paused_until(ctx: AppContext, api: str) -> datetime | None:
    ttl_ms = await ctx.redis.pttl(PAUSE_KEY + f"{_appid(ctx, api)}:{api}")
    return ctx.clock.now() + timedelta(milliseconds=ttl_ms) if ttl_ms and ttl_ms > 0 else None


async def pause(ctx: AppContext, api: str, reason: str) -> datetime:
    until = next_midnight(ctx.clock.now())
    value = json.dumps({"reason": reason, "since": ctx.clock.now().isoformat()}, ensure_ascii=False)
    await ctx.redis.set(PAUSE_KEY + f"{_appid(ctx, api)}:{api}", value,
                        exat=int(ctx.clock.to_system(until).timestamp()))
    log.warning("WeChat daily quota reached: %s paused until %s", api, until.isoformat())
    return until


async def resume(ctx: AppContext, api: str) -> None:
    """An admin lifts a pause (e.g. after WeChat raised the quota); held jobs run on time."""
    await ctx.redis.delete(PAUSE_KEY + f"{_appid(ctx, api)}:{api}")


async def paused_apis(ctx: AppContext) -> list[dict[str, Any]]:
    found = []
    for api in (API_OA, API_MP):
        until = await paused_until(ctx, api)
        if until is not None:
            raw = await ctx.redis.get(PAUSE_KEY + f"{_appid(ctx, api)}:{api}")
            info = json.loads(raw) if raw else {}
            found.append({"api": api, "label": API_LABELS[api], "until": until,
                          "reason": info.get("reason", "")})
    return found


# -- the delivery job ----------------------------------------------------------------------

@jobs.job(name="deliver", max_tries=20)
async def deliver(ctx: AppContext, ids: list[str]) -> int:
    """Send the still-queued notifications among ``ids``; returns how many were sent."""
    batch_id = jobs.current_job_id.get()
    batch = await batches_model.get(ctx.db, batch_id) if batch_id else None
    if batch is not None and batch.get("plan"):
        await notify.materialise(ctx, batch)
    docs = [d for d in await outbox_model.by_ids(ctx.db, [ObjectId(i) for i in ids],
                                                   outbox_model.DELIVERY_FIELDS)
            if d["status"] == "queued"]
    order = {ObjectId(i): n for n, i in enumerate(ids)}
    docs.sort(key=lambda d: order[d["_id"]])
    messages = await messages_model.by_ids(ctx.db, [d["msg"] for d in docs])
    sent = 0
    size = max(1, ctx.settings.notify.send_group)
    for api in (API_OA, API_MP):
        todo = [d for d in docs if api_of(d) == api]
        for i in range(0, len(todo), size):
            if jobs.is_stopping(ctx):
                raise jobs.Retry(defer=1)  # the rest is still queued: this job runs again
            until = await paused_until(ctx, api)
            if until is not None:
                await _hold(ctx, todo[i:], until)
                break
            group = todo[i:i + size]
            await _wait_for_tokens(ctx, api, len(group))
            sent += await send_group(ctx, api, group, messages)
    if batch_id:
        await batches_model.delete(ctx.db, batch_id)  # every id is dealt with or handed on
    return sent


async def _wait_for_tokens(ctx: AppContext, api: str, n: int) -> None:
    settings = ctx.settings.notify
    rate = settings.oa_template_rate if api == API_OA else settings.mp_subscribe_rate
    wait = await tokenbucket.reserve(ctx.redis, BUCKET_KEY + f"{_appid(ctx, api)}:{api}",
                                     rate=rate, burst_seconds=settings.burst_seconds, n=n)
    if wait > 0:
        await asyncio.sleep(wait)


async def _hold(ctx: AppContext, docs: list[dict[str, Any]], until: datetime) -> None:
    """A paused API: these wait, queued, for a job deferred to the end of the pause."""
    ids = [d["_id"] for d in docs]
    await outbox_model.defer_queued(ctx.db, ids, until)
    await _hand_on(ctx, ids, until, "held")


async def _hand_on(ctx: AppContext, ids: list[ObjectId], when: datetime, prefix: str) -> None:
    """A new batch (record first, then job) for notifications that go later."""
    if not ids:
        return
    # A fresh id each time: the job handing on may still hold an id made from the same ids.
    batches = notify.make_batches(ctx, ids, due_at=when, prefix=f"deliver:{prefix}:{ObjectId()}")
    await batches_model.insert_many(ctx.db, batches)
    await notify.enqueue_batches(ctx, batches)


@dataclass
class Outcome:
    doc: dict[str, Any]
    status: str                    # sent | failed | undeliverable | queued (later)
    errcode: int | None = None
    errmsg: str = ""
    msgid: int | None = None
    later: datetime | None = None  # queued: when to try again


async def send_group(ctx: AppContext, api: str, group: list[dict[str, Any]],
                     messages: dict[ObjectId, dict[str, Any]]) -> int:
    """Claim, send and settle one group; returns how many were sent."""
    token = secrets.token_hex(8)
    lease_ms = int(ctx.settings.notify.lease_seconds * 1000)
    held = await _claim(ctx, [d["_id"] for d in group], token, lease_ms)
    busy = [d["_id"] for d in group if d["_id"] not in held]
    if busy:  # another run holds them (a dead worker's lease): try when it expires
        await _hand_on(ctx, busy, ctx.clock.now() + await _claims_left(ctx, busy), "busy")
    try:
        # Read back under our claims: only what is still queued may go.
        still = {d["_id"] for d in await outbox_model.by_ids(ctx.db, list(held), {"status": 1})
                 if d["status"] == "queued"}
        claimed = [d for d in group if d["_id"] in still]
        outcomes = await asyncio.gather(*(_send_one(ctx, api, d, messages.get(d["msg"]))
                                          for d in claimed))
        await _settle(ctx, outcomes)
    finally:
        await _release(ctx, held, token)
    return sum(1 for o in outcomes if o.status == "sent")


async def _claim(ctx: AppContext, ids: list[ObjectId], token: str, lease_ms: int) -> set[ObjectId]:
    async with ctx.redis.pipeline(transaction=False) as pipe:
        for doc_id in ids:
            pipe.set(CLAIM_KEY + str(doc_id), token, nx=True, px=lease_ms)
        won = await pipe.execute()
    return {doc_id for doc_id, ok in zip(ids, won, strict=True) if ok}


async def _claims_left(ctx: AppContext, ids: list[ObjectId]) -> timedelta:
    async with ctx.redis.pipeline(transaction=False) as pipe:
        for doc_id in ids:
            pipe.pttl(CLAIM_KEY + str(doc_id))
        left = await pipe.execute()
    return timedelta(milliseconds=max(100, *left))


# Delete a claim only if it is still ours (it may have expired and been taken).
_RELEASE = """
for i, key in ipairs(KEYS) do
  if redis.call('get', key) == ARGV[1] then redis.call('del', key) end
end
return 0
"""


async def _release(ctx: AppContext, ids: set[ObjectId], token: str) -> None:
    if ids:
        await ctx.redis.eval(_RELEASE, len(ids), *[CLAIM_KEY + str(i) for i in ids], token)


async def _send_one(ctx: AppContext, api: str, doc: dict[str, Any],
                    message: dict[str, Any] | None) -> Outcome:
    attempts = doc.get("attempts", 0) + 1  # this one
    part = (message or {}).get("oa" if api == API_OA else "mp")
    if not part:
        return Outcome(doc, "failed", errmsg="该类通知未配置微信消息模板")
    try:
        if api == API_OA:
            return Outcome(doc, "sent", msgid=await _send_template(ctx, doc, message, part))
        return await _send_subscribe(ctx, doc, message, part)
    except QuotaExceeded as exc:
        until = await pause(ctx, api, f"{exc.errcode} {exc.errmsg}")
        return Outcome(doc, "queued", exc.errcode, exc.errmsg, later=until)
    except RequireSubscribe as exc:
        await _unfollowed(ctx, doc)
        return Outcome(doc, "failed", exc.errcode, exc.errmsg)
    except WeChatError as exc:
        retryable = exc.retryable or isinstance(exc, InvalidCredential | AccessTokenExpired)
        if retryable and attempts < ctx.settings.notify.max_attempts:
            delay = ctx.settings.notify.retry_backoff_seconds * 2 ** (attempts - 1)
            return Outcome(doc, "queued", exc.errcode, exc.errmsg,
                           later=ctx.clock.now() + timedelta(seconds=delay))
        return Outcome(doc, "failed", exc.errcode, exc.errmsg)
    except Exception as exc:  # a bug must not leave it "sending" until the lease runs out
        log.exception("notification send failed", extra={"fields": {"id": str(doc["_id"])}})
        return Outcome(doc, "failed", None, f"{exc.__class__.__name__}: {exc}")


async def _send_template(ctx: AppContext, doc: dict[str, Any], message: dict[str, Any],
                         part: dict[str, Any]) -> int:
    url, miniprogram = None, None
    mp_appid = ctx.settings.wechat.mp_appid
    if doc.get("owner_type", "member") == "user" and message.get("link"):
        url = ctx.settings.public_url + message["link"]  # an admin: the management web
    elif message.get("page") and mp_appid:
        miniprogram = {"appid": mp_appid, "pagepath": message["page"]}
    return await oa_client(ctx).send_template(doc["openid"], part["template_id"], part["data"],
                                              url=url, miniprogram=miniprogram)


async def _send_subscribe(ctx: AppContext, doc: dict[str, Any], message: dict[str, Any],
                          part: dict[str, Any]) -> Outcome:
    template_id = part["template_id"]
    if not await grants_model.take(ctx.db, doc["owner"], template_id):
        return Outcome(doc, "undeliverable", errmsg="小程序订阅消息的授权次数已用完")
    try:
        await mp_client(ctx).send_subscribe(doc["openid"], template_id, part["data"],
                                            page=message.get("page") or None)
    except WeChatError as exc:
        if not isinstance(exc, UserNotSubscribed):
            await grants_model.give_back(ctx.db, doc["owner"], template_id)
        raise
    return Outcome(doc, "sent")


async def _unfollowed(ctx: AppContext, doc: dict[str, Any]) -> None:
    """43004: WeChat says the member no longer follows; later notices use another channel."""
    if doc.get("owner_type", "member") == "member":
        from wxbackend.services.orgs import binding

        await binding.record_unfollow(ctx, doc["openid"])


async def _settle(ctx: AppContext, outcomes: list[Outcome]) -> None:
    now = ctx.clock.now()
    changes = []
    for o in outcomes:
        change: dict[str, Any] = {"status": o.status, "errcode": o.errcode, "errmsg": o.errmsg[:500]}
        if o.status == "sent":
            change.update(sent_at=now, next_at=now, msgid=o.msgid)
        else:
            change["next_at"] = o.later or now
        if o.status in outbox_model.SCOPED:
            change["scope"] = o.doc.get("org_ancestors") or []  # the outbox page lists these
        changes.append((o.doc["_id"], change))
    await outbox_model.settle(ctx.db, changes)
    ended = [{**o.doc, "status": o.status} for o in outcomes if o.status != "queued"]
    await stats_model.add(ctx.db, notify.stat_deltas(ended, lambda d: d["status"]))
    await _count_notices(ctx, ended)
    later: dict[datetime, list[ObjectId]] = {}
    for o in outcomes:
        if o.status == "queued":
            later.setdefault(o.later or now, []).append(o.doc["_id"])
    for when, ids in later.items():
        await _hand_on(ctx, ids, when, "retry")


async def _count_notices(ctx: AppContext, ended: list[dict[str, Any]]) -> None:
    names = {"sent": "delivered", "failed": "failed", "undeliverable": "inbox"}
    per_notice: dict[ObjectId, dict[str, int]] = {}
    for doc in ended:
        if doc.get("notice_id"):
            counts = per_notice.setdefault(doc["notice_id"], {})
            counts[names[doc["status"]]] = counts.get(names[doc["status"]], 0) + 1
    for notice_id, counts in per_notice.items():
        await notices_model.add_counts(ctx.db, notice_id, counts)


# -- recovery and clean-up -----------------------------------------------------------------

@jobs.cron_job("outbox_recovery", "outbox_recovery")
async def recover(ctx: AppContext) -> dict[str, int]:
    """Queue again the batches whose job Redis lost (or that failed)."""
    report = {"reenqueued": await reenqueue_lost_batches(ctx)}
    if any(report.values()):
        log.warning("outbox recovery", extra={"fields": report})
    return report


async def reenqueue_lost_batches(ctx: AppContext, limit: int = 5000) -> int:
    """Batches due a while ago whose job is neither queued nor running."""
    grace = timedelta(seconds=ctx.settings.notify.recovery_grace_seconds)
    batches = await batches_model.due(ctx.db, ctx.clock.now() - grace, limit)
    alive = await jobs.job_exists(ctx, [b["_id"] for b in batches])
    lost = [b for b in batches if not alive[b["_id"]]]
    for batch in lost:
        if batch.get("recoveries", 0) >= MAX_RECOVERIES:
            await _give_up(ctx, batch)
            continue
        await batches_model.count_recovery(ctx.db, batch["_id"])
        await notify.enqueue_batches(ctx, [batch])
    return len(lost)


async def _give_up(ctx: AppContext, batch: dict[str, Any]) -> None:
    """A batch whose job failed again and again: its notifications fail, visibly."""
    docs = [d for d in await outbox_model.by_ids(ctx.db, batch["ids"], outbox_model.DELIVERY_FIELDS)
            if d["status"] == "queued"]
    now = ctx.clock.now()
    for doc in docs:
        await outbox_model.update_each(ctx.db, [doc["_id"]], {"status": "queued"}, {"$set": {
            "status": "failed", "next_at": now, "errmsg": "投递任务反复失败，已停止重试",
            "scope": doc.get("org_ancestors") or []}})
    ended = [{**d, "status": "failed"} for d in docs]
    await stats_model.add(ctx.db, notify.stat_deltas(ended, lambda d: d["status"]))
    await _count_notices(ctx, ended)
    await batches_model.delete(ctx.db, batch["_id"])
    log.error("delivery batch given up", extra={"fields": {"batch": batch["_id"], "failed": len(docs)}})


@jobs.pruner
async def prune_notifications(ctx: AppContext) -> int:
    """Ended notifications and their messages after ``[notify] retention_days``."""
    cutoff = ctx.clock.now() - timedelta(days=ctx.settings.notify.retention_days)
    deleted = 0
    for status in outbox_model.FINAL:
        deleted += await outbox_model.delete_ended(ctx.db, status, cutoff)
    deleted += await messages_model.delete_before(ctx.db, cutoff)
    deleted += await stats_model.delete_before(ctx.db, notify.local_day(cutoff))
    return deleted
