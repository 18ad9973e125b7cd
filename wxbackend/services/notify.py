"""Notifications: one entry point for every capability, an outbox, and everybody's inbox.

A capability registers each kind of notification once, then calls
:func:`notify`; it never talks to WeChat itself::

    from wxbackend.services.notify import Kind, Recipient, notify, register_kind

    register_kind(Kind(
        name="meeting_published", title="会议通知", template_setting="meeting_published",
        fields={"thing1": "{title}", "time2": "{start}", "thing3": "{place}"},
        required=("title", "start", "place"), page="pages/meeting/index?id={meeting_id}"))

    result = await notify(ctx, [Recipient(member_id=m) for m in attendees],
                          "meeting_published", {"title": ..., "start": start_dt, "place": ...,
                                                "meeting_id": str(meeting_id)},
                          subject=f"meeting:{meeting_id}:published")

What ``notify`` does, per recipient, before it returns:

- picks the channel: an official-account template message when the member
  follows the account; else a mini-program subscribe message when the member
  granted one for this kind's template; else none: the notification is
  recorded ``undeliverable`` and is only in the member's inbox
  (``GET /api/v1/me/notifications``). An admin user (``Recipient(user_id=)``)
  gets it in the management web's inbox at once (``sent``, channel ``web``),
  and by WeChat too when the user record names a ``member_id`` who follows.
- renders the kind's template once for all recipients (template ids and field
  mapping from the settings, see :func:`templates_of`). Missing data raises
  :class:`~wxbackend.errors.InvalidInput` here, at enqueue, never in a worker.
- writes one outbox document per recipient (``models.notifications``) with an
  idempotency key ``recipient + kind + subject``: calling again with the same
  subject adds nobody twice (``result.duplicates``). So ``subject`` must name
  the event, e.g. ``f"meeting:{id}:published"``, not just the kind.
- enqueues delivery jobs (``wxbackend.services.notify_delivery``) that carry
  outbox ids in batches; workers send within the rate limits and record the
  outcome and WeChat's errcode on each document.

Kinds with ``digest=True`` do not interrupt secretaries: admin users find them
in their inbox and in the next daily digest (``wxbackend.services.digest``),
unless the kind is ``urgent`` (or listed in ``[notify] urgent_kinds``).

Templates: ``Kind.template_setting`` names either a settings section that
holds ``oa_template_id`` / ``mp_template_id`` (and optionally ``oa_fields`` /
``mp_fields``), e.g. ``"meetings"``, or a prefix of keys in ``[notify]``:
``"notice"`` reads ``[notify] notice_oa_template_id`` and so on. An empty
template id means "not configured": that channel is not used for the kind.
A fields setting overrides ``Kind.fields``: ``"thing1={title};time2={start}"``.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
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
from wxbackend.errors import InvalidInput, NotFound, object_id

# Outbox documents written per insert_many (SecantusDB inserts ~2,000-3,000 a second).
INSERT_CHUNK = 1000
# WeChat's length limits of template values, by keyword type (the key without its number).
VALUE_LIMITS = {"thing": 20, "character_string": 32, "phrase": 5, "name": 10, "number": 32,
                "letter": 32, "symbol": 5, "phone_number": 17, "car_number": 8}
OLD_STYLE_LIMIT = 200  # first / keywordN / remark of classic template messages


@dataclass(frozen=True)
class Recipient:
    """A member (WeChat + the mini-program inbox) or an admin user (the web inbox)."""

    member_id: ObjectId | None = None
    user_id: ObjectId | None = None


@dataclass(frozen=True)
class Kind:
    """A kind of notification; see the module docstring."""

    name: str
    title: str                                  # shown in inboxes and the outbox: 会议通知
    template_setting: str                       # where the template ids and mappings live
    fields: dict[str, str] = field(default_factory=dict)  # template key -> format over data
    required: tuple[str, ...] = ()              # data that must be present and not empty
    urgent: bool = False                        # never waits for the digest
    digest: bool = False                        # admin users get it in the daily digest
    link: str = ""                              # management-web path, format over data
    page: str = ""                              # mini-program page, format over data
    summary: str = ""                           # inbox text, format over data
    mp_fields: dict[str, str] | None = None     # subscribe-message mapping (default: fields)


KINDS: dict[str, Kind] = {}


def register_kind(kind: Kind) -> Kind:
    """Make ``kind`` known to :func:`notify` (registering the same name again replaces it)."""
    if not kind.name or not kind.name.replace("_", "").isalnum():
        raise ValueError(f"kind name must be letters, digits and _: {kind.name!r}")
    KINDS[kind.name] = kind
    return kind


@dataclass
class NotifyResult:
    message_id: ObjectId | None = None
    created: int = 0         # new outbox documents
    duplicates: int = 0      # already notified of this subject: nothing added
    queued: int = 0          # waiting for WeChat delivery by a worker
    web: int = 0             # admin users: in their web inbox now
    undeliverable: int = 0   # members without a WeChat channel: inbox only
    skipped: int = 0         # unknown or inactive recipients
    planned: int = 0         # a big fan-out: recipients handed to workers (see plan())
    ids: list[ObjectId] = field(default_factory=list)


# -- templates and rendering ---------------------------------------------------------------

@dataclass(frozen=True)
class Templates:
    oa_template_id: str
    oa_fields: dict[str, str]
    mp_template_id: str
    mp_fields: dict[str, str]


def _parse_fields(text: str, setting: str) -> dict[str, str]:
    found = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise InvalidInput("notify_bad_fields", f"消息模板字段设置有误：{setting} = {text!r}")
        found[key.strip()] = value.strip()
    return found


def templates_of(ctx: AppContext, kind: Kind) -> Templates:
    """Template ids and field mappings of ``kind`` from the settings (see module docstring)."""
    section = getattr(ctx.settings, kind.template_setting, None)
    if section is not None and hasattr(section, "oa_template_id"):
        get = lambda key: str(getattr(section, key, "") or "")  # noqa: E731
        where = f"[{kind.template_setting}] "
    else:
        notify = ctx.settings.notify
        get = lambda key: str(getattr(notify, f"{kind.template_setting}_{key}", "") or "")  # noqa: E731
        where = f"[notify] {kind.template_setting}_"
    oa_fields = _parse_fields(get("oa_fields"), where + "oa_fields") or dict(kind.fields)
    mp_fields = (_parse_fields(get("mp_fields"), where + "mp_fields")
                 or dict(kind.mp_fields if kind.mp_fields is not None else kind.fields))
    return Templates(get("oa_template_id"), oa_fields, get("mp_template_id"), mp_fields)


def _display(value: Any) -> str:
    """Data values as people read them: times in Asia/Shanghai."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    return str(value).strip()


def _names(pattern: str) -> set[str]:
    return {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(pattern)
            if name}


def _fit(key: str, value: str) -> str:
    """Cut a value to WeChat's limit for its keyword type (else WeChat refuses it, 47003)."""
    kind = key.rstrip("0123456789").rstrip("_") or key
    limit = VALUE_LIMITS.get(kind, OLD_STYLE_LIMIT)
    return value if len(value) <= limit else value[:limit - 1] + "…"


@dataclass(frozen=True)
class Content:
    kind: Kind
    data: dict[str, str]
    title: str
    summary: str
    link: str
    page: str
    oa: dict[str, Any] | None
    mp: dict[str, Any] | None


def render(ctx: AppContext, kind_name: str, data: dict[str, Any]) -> Content:
    """Check ``data`` against the kind and render its templates; InvalidInput if incomplete."""
    kind = KINDS.get(kind_name)
    if kind is None:
        raise InvalidInput("notify_unknown_kind", f"未知的通知类型：{kind_name}")
    if not isinstance(data, dict):
        raise InvalidInput("notify_bad_data", f"通知“{kind.title}”的数据应为字典")
    clean = {str(k): _display(v) for k, v in data.items()}
    templates = templates_of(ctx, kind)
    patterns = [kind.link, kind.page, kind.summary, *templates.oa_fields.values(),
                *templates.mp_fields.values()]
    needed = set(kind.required).union(*(_names(p) for p in patterns))
    missing = sorted(n for n in needed if not clean.get(n))
    if missing:
        raise InvalidInput("notify_missing_data",
                           f"通知“{kind.title}”缺少数据：{'、'.join(missing)}",
                           details=[{"field": n, "message": "不能为空"} for n in missing])

    def fill(mapping: dict[str, str]) -> dict[str, dict[str, str]]:
        return {key: {"value": _fit(key, pattern.format_map(clean))} for key, pattern in mapping.items()}

    oa = ({"template_id": templates.oa_template_id, "data": fill(templates.oa_fields)}
          if templates.oa_template_id and templates.oa_fields else None)
    mp = ({"template_id": templates.mp_template_id, "data": fill(templates.mp_fields)}
          if templates.mp_template_id and templates.mp_fields else None)
    title = f"{kind.title}：{clean['title']}" if clean.get("title") else kind.title
    return Content(kind, clean, title[:80], kind.summary.format_map(clean) if kind.summary else "",
                   kind.link.format_map(clean), kind.page.format_map(clean), oa, mp)


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


def content_of(message: dict[str, Any]) -> Content:
    """The rendered content a stored message holds (for documents written later)."""
    kind = KINDS.get(message["kind"]) or Kind(message["kind"], message["kind"], message["kind"])
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
        docs = await documents(ctx, message, content_of(message), plan_["subject"], members, users,
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


# -- inboxes -------------------------------------------------------------------------------

def parse_id(raw: str | ObjectId) -> ObjectId:
    return object_id(raw, "notification_not_found", "找不到该通知")


@dataclass
class InboxItem:
    doc: dict[str, Any]
    message: dict[str, Any]

    @property
    def kind_title(self) -> str:
        kind = KINDS.get(self.doc["kind"])
        return kind.title if kind else self.doc["kind"]


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
    items = [InboxItem(d, messages.get(d["msg"], {})) for d in docs[:limit]]
    return items, (str(docs[limit - 1]["_id"]) if len(docs) > limit else None)


async def inbox_item(ctx: AppContext, owner: ObjectId, notification_id: str | ObjectId) -> InboxItem:
    doc = await outbox_model.get(ctx.db, parse_id(notification_id))
    if doc is None or doc["owner"] != owner:
        raise NotFound("notification_not_found", "找不到该通知")
    messages = await messages_model.by_ids(ctx.db, [doc["msg"]])
    return InboxItem(doc, messages.get(doc["msg"], {}))


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
