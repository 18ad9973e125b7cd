"""Notices (通知公告): an admin writes to the members, or the secretaries, of a subtree.

The notice is stored at once and a worker fans it out through the notify
service (one outbox document per recipient, delivered by WeChat where the
member can be reached, always in the inbox). The sender sees the maintained
counters: recipients, delivered, inbox only, failed, read::

    notice = await notices.send(ctx, actor, district_id, "members", "关于开展主题党日的通知", body)
    # ... a worker runs notice_fanout(notice_id), then the deliveries
    notice = await notices.view(ctx, actor, notice["_id"])   # notice["counts"]

Fan-out pages the subtree branch by branch in tree order (the organisation
tree snapshot with its maintained member counts, as ``members.page`` does),
never one query over a 20,000-member subtree, queues the members in batches
(``notify.plan``: the delivering workers write their outbox documents), and
records where it is in the notice, so a worker killed half-way resumes there;
the notify service's idempotency keys make a repeated chunk harmless. The
notice's ``recipients`` counter grows as the batches are written.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bson import ObjectId

from models import notices as notices_model
from models import notify_recipients as recipients_model
from wxbackend import jobs
from wxbackend.context import AppContext
from wxbackend.errors import InvalidInput, NotFound, object_id
from wxbackend.services import notify, orgs
from wxbackend.services.accounts import audit
from wxbackend.services.accounts.access import Actor
from wxbackend.services.orgs import orgtree

AUDIENCES = {"members": "全体党员", "secretaries": "各级书记"}
TITLE_MAX = 40
BODY_MAX = 2000
# Members per fan-out step: one insert_many of outbox documents (and a progress write).
FANOUT_MEMBERS = 1000
FANOUT_ORGS = 200
LIST_DAYS = 180

NOTICE = notify.Kind(
    name="notice", title="通知公告", template_setting="notice",
    fields={"thing1": "{title}", "thing2": "{org}", "time3": "{sent_at}"},
    required=("title", "org", "sent_at", "notice_id"),
    link="/admin/notices/{notice_id}", page="pages/notices/detail?id={notice_id}",
    summary="{excerpt}")


def parse_id(raw: str | ObjectId) -> ObjectId:
    return object_id(raw, "notice_not_found", "找不到该通知公告")


def _clean(audience: str, title: str, body: str) -> tuple[str, str]:
    if audience not in AUDIENCES:
        raise InvalidInput("notice_audience", "发送对象应为全体党员或各级书记")
    title, body = (title or "").strip(), (body or "").strip()
    if not title or len(title) > TITLE_MAX:
        raise InvalidInput("notice_title", f"标题不能为空，且不超过{TITLE_MAX}个字")
    if not body or len(body) > BODY_MAX:
        raise InvalidInput("notice_body", f"正文不能为空，且不超过{BODY_MAX}个字")
    return title, body


async def send(ctx: AppContext, actor: Actor, org_id: ObjectId | str, audience: str, title: str,
               body: str) -> dict[str, Any]:
    """Record a notice to ``org_id``'s subtree and queue its fan-out."""
    title, body = _clean(audience, title, body)
    org = await orgs.get(ctx, orgs.parse_id(org_id) if isinstance(org_id, str) else org_id)
    actor.require("notice.send", org["org_ancestors"])
    now = ctx.clock.now()
    doc = {"_id": ObjectId(), "org_id": org["_id"], "org_ancestors": list(org["org_ancestors"]),
           "org_name": org["name"], "audience": audience, "title": title, "body": body,
           "sender": {"id": actor.id, "name": actor.name}, "created_at": now, "state": "fanout",
           "fanout": {"position": 0, "generation": None}, "message_id": None,
           "counts": dict.fromkeys(notices_model.COUNTS, 0)}
    await notices_model.insert(ctx.db, doc)
    await audit.record(ctx, actor, "notice.send", "notice", doc["_id"], title, org["org_ancestors"],
                       {"audience": audience})
    await jobs.enqueue(ctx, "notice_fanout", str(doc["_id"]), _job_id=fanout_job_id(doc["_id"]))
    return doc


def fanout_job_id(notice_id: ObjectId) -> str:
    return f"notice_fanout:{notice_id}"


@jobs.job(name="notice_fanout")
async def fanout_job(ctx: AppContext, notice_id: str) -> int:
    return await fan_out(ctx, ObjectId(notice_id))


async def fan_out(ctx: AppContext, notice_id: ObjectId) -> int:
    """Add the notice's recipients to the outbox (resuming where a previous run stopped)."""
    notice = await notices_model.get(ctx.db, notice_id)
    if notice is None or notice["state"] != "fanout":
        return 0
    content = notify.render(ctx, "notice", _data(notice))
    message = await _message(ctx, notice, content)
    subject = f"notice:{notice['_id']}"
    if notice["audience"] == "members":
        added = await _fan_out_members(ctx, notice, message, content, subject)
    else:
        added = await _fan_out_secretaries(ctx, notice, message, content, subject)
    await notices_model.update_if(ctx.db, notice["_id"], {"state": "fanout"},
                                  {"$set": {"state": "sent", "sent_at": ctx.clock.now()}})
    return added


def _data(notice: dict[str, Any]) -> dict[str, Any]:
    excerpt = notice["body"].replace("\n", " ")
    return {"title": notice["title"], "org": notice["org_name"], "sent_at": notice["created_at"],
            "notice_id": str(notice["_id"]),
            "excerpt": excerpt if len(excerpt) <= 100 else excerpt[:99] + "…"}


async def _message(ctx: AppContext, notice: dict[str, Any], content: notify.Content) -> dict[str, Any]:
    """One rendered message per notice, kept across resumed fan-outs."""
    if notice.get("message_id"):
        from models import notify_messages as messages_model

        found = await messages_model.by_ids(ctx.db, [notice["message_id"]])
        if notice["message_id"] in found:
            return found[notice["message_id"]]
    message = await notify.store_message(ctx, content, f"notice:{notice['_id']}")
    await notices_model.update_if(ctx.db, notice["_id"], {"state": "fanout"},
                                  {"$set": {"message_id": message["_id"]}})
    return message


async def _fan_out_members(ctx: AppContext, notice: dict[str, Any], message: dict[str, Any],
                           content: notify.Content, subject: str) -> int:
    tree = await orgtree.snapshot(ctx)
    nodes = tree.with_counts(notice["org_id"]) or [(notice["org_id"], 0)]
    position = notice["fanout"]["position"]
    if notice["fanout"]["generation"] != tree.generation:
        position = 0  # the tree changed since the last run: start over (keys dedupe)
    added, planned = 0, []
    while position < len(nodes):
        if jobs.is_stopping(ctx):
            raise jobs.Retry(defer=1)
        chunk, wanted = [], FANOUT_MEMBERS
        while position < len(nodes) and len(chunk) < FANOUT_ORGS and (wanted > 0 or not chunk):
            chunk.append(nodes[position][0])
            wanted -= nodes[position][1]
            position += 1
        people = await recipients_model.members_in_orgs(ctx.db, chunk)
        active = [m["_id"] for m in people if m.get("state") == "active"]
        # Batches of recipients: the workers write the outbox documents as they send.
        result = await notify.plan(ctx, message, subject, active, notice_id=notice["_id"], hold=planned)
        added += result.planned
        await notices_model.update_if(ctx.db, notice["_id"], {"state": "fanout"}, {"$set": {
            "fanout": {"position": position, "generation": tree.generation}}})
    await notify.enqueue_batches(ctx, planned)
    return added


async def _fan_out_secretaries(ctx: AppContext, notice: dict[str, Any], message: dict[str, Any],
                               content: notify.Content, subject: str) -> int:
    """The members recorded as 书记 of the subtree's organisations, and the secretary accounts.

    A secretary account linked to its member (``member_id``) is reached once,
    as the account (web inbox, and WeChat through the link).
    """
    led = await recipients_model.org_secretaries(ctx.db, notice["org_id"])
    tree = await orgtree.snapshot(ctx)
    org_ids = tree.subtree(notice["org_id"]) or [notice["org_id"]]
    users = []
    for i in range(0, len(org_ids), FANOUT_ORGS):
        found = await recipients_model.users_with_roles_in(ctx.db, org_ids[i:i + FANOUT_ORGS])
        users.extend(u for u in found if u.get("active", True)
                     and any(r["role"] == "secretary" for r in u.get("roles", [])))
    users = list({u["_id"]: u for u in users}.values())
    linked = {u.get("member_id") for u in users}
    member_ids = list({o["secretary"]["member_id"] for o in led} - linked)
    people = await recipients_model.members_by_ids(ctx.db, member_ids)
    result = await notify.fan_out(ctx, message, content, subject, members=people, users=users,
                                  notice_id=notice["_id"])
    return result.created


# -- pages ---------------------------------------------------------------------------------

async def view(ctx: AppContext, actor: Actor, notice_id: str | ObjectId) -> dict[str, Any]:
    notice = await notices_model.get(ctx.db, parse_id(notice_id))
    if notice is None:
        raise NotFound("notice_not_found", "找不到该通知公告")
    actor.require("outbox.view", notice["org_ancestors"])
    return notice


async def page(ctx: AppContext, actor: Actor, scope_id: ObjectId, before: str | None = None,
               limit: int = 30) -> tuple[list[dict[str, Any]], str | None]:
    """Notices addressed inside ``scope_id``'s subtree over the last half year, newest first."""
    org = await orgs.get(ctx, scope_id)
    actor.require("outbox.view", org["org_ancestors"])
    cursor = ObjectId(before) if before and ObjectId.is_valid(before) else None
    horizon = ctx.clock.id_at(ctx.clock.now() - timedelta(days=LIST_DAYS))
    rows = await notices_model.page(ctx.db, org["_id"], cursor, horizon, limit + 1)
    return rows[:limit], (str(rows[limit - 1]["_id"]) if len(rows) > limit else None)


async def body_of(ctx: AppContext, notice_id: ObjectId) -> dict[str, Any] | None:
    """For a recipient's inbox: the notice they received (no scope check: it was sent to them)."""
    return await notices_model.get(ctx.db, notice_id)


async def resume_stuck(ctx: AppContext) -> int:
    """Fan-outs whose job was lost: queue them again (the recovery cron calls this)."""
    stuck = await notices_model.in_fanout(ctx.db, ctx.clock.now() - timedelta(
        seconds=ctx.settings.notify.recovery_grace_seconds))
    alive = await jobs.job_exists(ctx, [fanout_job_id(n["_id"]) for n in stuck])
    requeued = 0
    for notice in stuck:
        if not alive[fanout_job_id(notice["_id"])]:
            await jobs.enqueue(ctx, "notice_fanout", str(notice["_id"]),
                               _job_id=fanout_job_id(notice["_id"]))
            requeued += 1
    return requeued


@jobs.cron_job("notice_recovery", "outbox_recovery")
async def recover_fanouts(ctx: AppContext) -> int:
    return await resume_stuck(ctx)
