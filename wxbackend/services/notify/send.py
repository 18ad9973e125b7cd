"""notify() and what it writes: the stored message, outbox documents per recipient, counters, delivery batches."""

from __future__ import annotations

from datetime import datetime, timedelta
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
from wxbackend.errors import InvalidInput
from wxbackend.services.notify.kinds import Content, Kind, NotifyResult, Recipient, render

INSERT_CHUNK = 1000


# -- notify --------------------------------------------------------------------------------

def check_subject(subject: str) -> str:
    if not isinstance(subject, str) or not subject.strip() or len(subject) > 200:
        raise InvalidInput("notify_bad_subject", "通知的幂等主题（subject）应为1-200个字符")
    return subject.strip()


async def notify(ctx: AppContext, recipients: list[Recipient], kind: str, data: dict[str, Any],
                 *, subject: str) -> NotifyResult:
    """Notify each recipient once per ``(kind, subject)``; see the module docstring."""
    subject = check_subject(subject)
    content = render(ctx, kind, data)
    member_ids, user_ids = _split(recipients)
    if len(member_ids) + len(user_ids) > ctx.settings.notify.eager_limit:
        message = await store_message(ctx, content, subject)
        return await plan(ctx, message, subject, member_ids, user_ids)
    members = await recipients_model.members_by_ids(ctx.db, member_ids)
    users = await recipients_model.users_by_ids(ctx.db, user_ids)
    message = await store_message(ctx, content, subject)
    result = await fan_out(ctx, message, content, subject, members=members, users=users)
    result.skipped += len(member_ids) + len(user_ids) - len(members) - len(users)
    return result


def _split(recipients: list[Recipient]) -> tuple[list[ObjectId], list[ObjectId]]:
    member_ids: dict[ObjectId, None] = {}
    user_ids: dict[ObjectId, None] = {}
    for r in recipients:
        if not isinstance(r, Recipient) or (r.member_id is None) == (r.user_id is None):
            raise InvalidInput("notify_bad_recipient", "每个收件人须且只须指定党员或管理员之一")
        if r.member_id is not None:
            member_ids[r.member_id] = None
        else:
            user_ids[r.user_id] = None
    return list(member_ids), list(user_ids)


async def store_message(ctx: AppContext, content: Content, subject: str) -> dict[str, Any]:
    doc = {"_id": ObjectId(), "kind": content.kind.name, "subject": subject, "title": content.title,
           "summary": content.summary, "data": content.data, "oa": content.oa, "mp": content.mp,
           "link": content.link, "page": content.page, "created_at": ctx.clock.now()}
    await messages_model.insert(ctx.db, doc)
    return doc


def content_of(ctx: AppContext, message: dict[str, Any]) -> Content:
    """The rendered content a stored message holds (for documents written later)."""
    kind = ctx.registry.kinds.get(message["kind"]) or Kind(message["kind"], message["kind"], message["kind"])
    return Content(kind, message.get("data", {}), message["title"], message.get("summary", ""),
                   message.get("link", ""), message.get("page", ""), message.get("oa"), message.get("mp"))


def local_day(instant: datetime) -> str:
    """The Shanghai date of an instant, as the outbox counts days: "2026-12-03"."""
    return instant.astimezone(SHANGHAI).date().isoformat()


def is_urgent(ctx: AppContext, kind: Kind) -> bool:
    listed = {k.strip() for k in ctx.settings.notify.urgent_kinds.split(",") if k.strip()}
    return kind.urgent or kind.name in listed


# -- outbox documents ------------------------------------------------------------------------

async def fan_out(ctx: AppContext, message: dict[str, Any], content: Content, subject: str, *,
                  members: list[dict[str, Any]], users: list[dict[str, Any]] = (),
                  notice_id: ObjectId | None = None) -> NotifyResult:
    """Outbox documents for these recipients now, their counters, and their delivery jobs."""
    docs = await documents(ctx, message, content, subject, members, users, notice_id)
    result = NotifyResult(message_id=message["_id"])
    for start in range(0, len(docs), INSERT_CHUNK):
        chunk = docs[start:start + INSERT_CHUNK]
        # The batches (the durable record of the jobs) before the notifications: a crash
        # in between leaves nothing queued that the recovery cannot find.
        batches = make_batches(ctx, [d["_id"] for d in chunk if d["status"] == "queued"])
        await batches_model.insert_many(ctx.db, batches)
        new, skipped = await insert_and_count(ctx, chunk, notice_id)
        _tally(result, new, skipped)
        inserted = {d["_id"] for d in new}
        live = [b for b in batches if inserted.intersection(b["ids"])]
        for dead in (b for b in batches if b not in live):
            await batches_model.delete(ctx.db, dead["_id"])  # only duplicates: nothing to send
        await enqueue_batches(ctx, live)
    result.skipped = len(members) + len(users) - len(docs)
    return result


async def documents(ctx: AppContext, message: dict[str, Any], content: Content, subject: str,
                    members: list[dict[str, Any]], users: list[dict[str, Any]],
                    notice_id: ObjectId | None, ids: dict[ObjectId, ObjectId] | None = None
                    ) -> list[dict[str, Any]]:
    """The outbox documents of active recipients (``ids``: outbox ids chosen in advance)."""
    now = ctx.clock.now()
    docs = await _member_docs(ctx, content, message, subject,
                              [m for m in members if m.get("state", "active") == "active"], now)
    docs += await _user_docs(ctx, content, message, subject,
                             [u for u in users if u.get("active", True)], now)
    for doc in docs:
        if ids is not None:
            doc["_id"] = ids[doc["owner"]]
        if notice_id is not None:
            doc["notice_id"] = notice_id
    return docs


def _tally(result: NotifyResult, new: list[dict[str, Any]], skipped: int) -> None:
    result.created += len(new)
    result.duplicates += skipped
    result.ids.extend(d["_id"] for d in new)
    for d in new:
        if d["status"] == "queued":
            result.queued += 1
        elif d["status"] == "undeliverable":
            result.undeliverable += 1
        else:
            result.web += 1


def _base_doc(content: Content, message: dict[str, Any], subject: str, owner: ObjectId,
              owner_type: str, org_id: ObjectId | None, ancestors: list[ObjectId],
              now: datetime) -> dict[str, Any]:
    # Lean on purpose: SecantusDB writes ~2,000-3,000 of these a second, fewer when bigger.
    return {"_id": ObjectId(), "owner": owner, "owner_type": owner_type, "kind": content.kind.name,
            "subject": subject, "msg": message["_id"], "org_id": org_id,
            "org_ancestors": list(ancestors), "day": local_day(now), "created_at": now}


def _channel(content: Content, member: dict[str, Any], grants: dict[ObjectId, int]
             ) -> tuple[str, str | None, str]:
    """(channel, openid, reason when none) for one member."""
    # A member bound through the official account who never unfollowed is a follower
    # (the follow state is recorded from subscribe events, which older followers lack).
    if content.oa and member.get("oa_openid") and member.get("oa_following", True):
        return "oa", member["oa_openid"], ""
    if content.mp and member.get("mp_openid") and grants.get(member["_id"], 0) > 0:
        return "mp", member["mp_openid"], ""
    if not content.oa and not content.mp:
        return "inbox", None, "该类通知未配置微信消息模板"
    return "inbox", None, "未关注公众号，也未订阅小程序消息"


async def _member_docs(ctx: AppContext, content: Content, message: dict[str, Any], subject: str,
                       members: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    grants: dict[ObjectId, int] = {}
    if content.mp:
        # Only those who cannot be reached through the official account need a grant.
        need = [m["_id"] for m in members if m.get("mp_openid")
                and not (content.oa and m.get("oa_openid") and m.get("oa_following", True))]
        for i in range(0, len(need), recipients_model.CHUNK):
            grants.update(await grants_model.counts(ctx.db, need[i:i + recipients_model.CHUNK],
                                                    content.mp["template_id"]))
    docs = []
    for member in members:
        doc = _base_doc(content, message, subject, member["_id"], "member", member.get("org_id"),
                        member.get("org_ancestors") or [], now)
        channel, openid, reason = _channel(content, member, grants)
        doc["channel"] = channel
        if openid:
            doc.update(openid=openid, status="queued", next_at=now)
        else:
            doc.update(status="undeliverable", next_at=now, errmsg=reason, scope=doc["org_ancestors"])
        docs.append(doc)
    return docs


async def _user_docs(ctx: AppContext, content: Content, message: dict[str, Any], subject: str,
                     users: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    if not users:
        return []
    homes = await recipients_model.orgs_by_ids(
        ctx.db, [u["roles"][0]["org_id"] for u in users if u.get("roles")])
    waits = content.kind.digest and not is_urgent(ctx, content.kind)
    linked = {} if waits or not content.oa else {
        m["_id"]: m for m in await recipients_model.members_by_ids(
            ctx.db, [u["member_id"] for u in users if u.get("member_id")])}
    docs = []
    for user in users:
        home = homes.get(user["roles"][0]["org_id"]) if user.get("roles") else None
        doc = _base_doc(content, message, subject, user["_id"], "user",
                        home["_id"] if home else None, home["org_ancestors"] if home else [], now)
        member = linked.get(user.get("member_id"))
        if member and member.get("oa_openid") and member.get("oa_following", True) \
                and member.get("state") == "active":
            doc.update(channel="oa", openid=member["oa_openid"], status="queued", next_at=now)
        else:
            doc.update(channel="web", status="sent", next_at=now, sent_at=now)
        if waits:
            doc["digest"] = "pending"
        docs.append(doc)
    return docs


def _stat_field(doc: dict[str, Any]) -> str | None:
    return {"sent": "sent", "undeliverable": "undeliverable", "failed": "failed"}.get(doc["status"])


def stat_deltas(docs: list[dict[str, Any]], field_of: Any, total: bool = False
                ) -> dict[tuple[str, ObjectId], dict[str, int]]:
    """Counter changes per (day, organisation on the recipient's path)."""
    deltas: dict[tuple[str, ObjectId], dict[str, int]] = {}
    for doc in docs:
        name = field_of(doc)
        if not total and name is None:
            continue
        for org_id in doc.get("org_ancestors") or []:
            bucket = deltas.setdefault((doc["day"], org_id), {})
            if total:
                bucket["total"] = bucket.get("total", 0) + 1
            if name:
                bucket[name] = bucket.get(name, 0) + 1
    return deltas


async def insert_and_count(ctx: AppContext, docs: list[dict[str, Any]], notice_id: ObjectId | None
                           ) -> tuple[list[dict[str, Any]], int]:
    """Insert (skipping recipients notified of this subject before) and count the new ones."""
    skipped = await outbox_model.insert_many(ctx.db, docs)
    new = [d for i, d in enumerate(docs) if i not in skipped]
    await stats_model.add(ctx.db, stat_deltas(new, _stat_field, total=True))
    if notice_id is not None and new:
        await notices_model.add_counts(ctx.db, notice_id, {
            "recipients": len(new), "inbox": sum(1 for d in new if d["status"] == "undeliverable"),
            "delivered": sum(1 for d in new if d["status"] == "sent")})
    return new, len(skipped)


# -- batches and jobs ------------------------------------------------------------------------

def make_batches(ctx: AppContext, ids: list[ObjectId], *, due_at: datetime | None = None,
                 prefix: str = "deliver") -> list[dict[str, Any]]:
    """Delivery batches of ``[notify] batch_size`` ids; the job id names the first id."""
    now = ctx.clock.now()
    size = ctx.settings.notify.batch_size
    return [{"_id": f"{prefix}:{ids[i]}:{len(ids[i:i + size])}", "ids": ids[i:i + size],
             "due_at": due_at or now, "created_at": now, "recoveries": 0}
            for i in range(0, len(ids), size)]


async def plan(ctx: AppContext, message: dict[str, Any], subject: str, member_ids: list[ObjectId],
               user_ids: list[ObjectId] = (), notice_id: ObjectId | None = None,
               hold: list[dict[str, Any]] | None = None) -> NotifyResult:
    """A big fan-out: batches of recipients whose outbox documents the delivering worker writes.

    Queued (durably, in ``notify_batches``) in the time it takes to write one
    document per 50 recipients instead of one per recipient, so that a notice
    to a 5,000-member subtree is queued in about a second; the worker writes
    each batch's documents (choosing each channel then) right before sending.
    ``result.planned`` counts the recipients; duplicates and inactive members
    are found by the worker. With ``hold`` the batches are recorded but their
    jobs are left to the caller (appended to ``hold``): a fan-out in chunks
    releases them all at the end, so that deliveries do not compete with it
    for the database; a crash before that leaves them to the recovery job.
    """
    people = [("members", m) for m in member_ids] + [("users", u) for u in user_ids]
    now = ctx.clock.now()
    batches = []
    size = ctx.settings.notify.batch_size
    for i in range(0, len(people), size):
        chunk = people[i:i + size]
        ids = [ObjectId() for _ in chunk]
        batches.append({"_id": f"deliver:{ids[0]}:{len(ids)}", "ids": ids, "due_at": now,
                        "created_at": now, "recoveries": 0,
                        "plan": {"msg": message["_id"], "subject": subject, "notice_id": notice_id,
                                 "members": [p for kind, p in chunk if kind == "members"],
                                 "users": [p for kind, p in chunk if kind == "users"]}})
    await batches_model.insert_many(ctx.db, batches)
    if hold is None:
        await enqueue_batches(ctx, batches)
    else:
        hold.extend(batches)
    return NotifyResult(message_id=message["_id"], planned=len(people))


async def materialise(ctx: AppContext, batch: dict[str, Any]) -> None:
    """Write a planned batch's outbox documents (the ids chosen when it was planned)."""
    plan_ = batch["plan"]
    message = (await messages_model.by_ids(ctx.db, [plan_["msg"]])).get(plan_["msg"])
    if message is not None:
        owners = [*plan_["members"], *plan_["users"]]
        ids = dict(zip(owners, batch["ids"], strict=True))
        members = await recipients_model.members_by_ids(ctx.db, plan_["members"])
        users = await recipients_model.users_by_ids(ctx.db, plan_["users"])
        docs = await documents(ctx, message, content_of(ctx, message), plan_["subject"], members, users,
                               plan_.get("notice_id"), ids)
        await insert_and_count(ctx, docs, plan_.get("notice_id"))
    await batches_model.clear_plan(ctx.db, batch["_id"])


async def enqueue_batches(ctx: AppContext, batches: list[dict[str, Any]]) -> int:
    """Queue a delivery job per batch (a no-op for a batch whose job is queued already)."""
    now = ctx.clock.now()
    for batch in batches:
        later = batch["due_at"] if batch["due_at"] > now + timedelta(seconds=1) else None
        await jobs.enqueue(ctx, "deliver", [str(i) for i in batch["ids"]], _job_id=batch["_id"],
                           _defer_until=later)
    return len(batches)
