"""The secretaries' daily digest: at most one message a day of what needs them.

Instead of dozens of messages a day, each management-web user with the
secretary role gets one digest (the idempotency subject
``digest:<user id>:<date>`` makes a second one impossible) listing the pending
items the capabilities report, linking to the management web. It lands in
the web inbox, and on WeChat when the user record is linked to a member who
follows the official account (``users.member_id``).

A capability adds its items with a source; a source returns nothing when
there is nothing to say::

    from wxbackend.services.notify.digest import DigestItem, digest_source

    @digest_source("leave_requests")
    async def leave_requests(ctx, user, orgs, since) -> list[DigestItem]:
        n = ...  # leave requests waiting for this secretary's approval
        return [DigestItem("待审批请假", f"{n}条请假申请待审批", "/admin/leave")] if n else []

``orgs`` are the organisations the user is secretary of (documents with
``_id``, ``name``, ``org_ancestors``); ``since`` is 24 hours ago. Kinds
registered with ``digest=True`` reach secretaries through the digest too
("3条新通知"), unless urgent (``[notify] urgent_kinds``).

The cron ``secretary_digest`` (``[jobs] secretary_digest``, 08:00 by default)
fans out ``digest_users`` jobs of 50 users each.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId

from models import audit as audit_model
from models import notifications as outbox_model
from models import notify_recipients as recipients_model
from wxbackend import jobs
from wxbackend.context import AppContext
from wxbackend.services import notify
from wxbackend.services.notify import Kind, NotifyResult, Recipient
from wxbackend.services.orgs import orgtree

log = logging.getLogger("wxbackend.digest")

# Users per digest job, and organisations per users query.
USERS_PER_JOB = 50
ORGS_PER_QUERY = 200
# A secretary of a bigger subtree than this gets no member-by-member count (it would
# read too many members for one line of a digest).
UNBOUND_SCAN_LIMIT = 2000


@dataclass(frozen=True)
class DigestItem:
    source: str   # short label: 未绑定微信
    text: str     # the line: 12名党员尚未绑定微信
    link: str     # management-web path


DigestSource = Callable[[AppContext, dict[str, Any], list[dict[str, Any]], datetime],
                        Awaitable[list[DigestItem]]]


DIGEST = Kind(
    name="digest", title="待办汇总", template_setting="digest",
    fields={"thing1": "{headline}", "time2": "{date}"}, required=("headline", "date", "items"),
    link="/admin/inbox", summary="{items}")


# -- scheduling ---------------------------------------------------------------------------

@jobs.cron_job("secretary_digest", "secretary_digest")
async def schedule_digests(ctx: AppContext) -> int:
    """Queue today's digests, a job per 50 secretaries."""
    day = ctx.clock.today().isoformat()
    user_ids = await secretary_ids(ctx)
    for i in range(0, len(user_ids), USERS_PER_JOB):
        chunk = [str(u) for u in user_ids[i:i + USERS_PER_JOB]]
        await jobs.enqueue(ctx, "digest_users", chunk, day,
                           _job_id=f"digest:{day}:{chunk[0]}:{len(chunk)}")
    return len(user_ids)


async def secretary_ids(ctx: AppContext) -> list[ObjectId]:
    """Active users holding the secretary role anywhere, found organisation by organisation."""
    tree = await orgtree.snapshot(ctx)
    found: dict[ObjectId, None] = {}
    for i in range(0, len(tree.order), ORGS_PER_QUERY):
        for user in await recipients_model.users_with_roles_in(ctx.db, tree.order[i:i + ORGS_PER_QUERY]):
            if user.get("active", True) and any(r["role"] == "secretary" for r in user.get("roles", [])):
                found[user["_id"]] = None
    return list(found)


@jobs.job(name="digest_users")
async def digest_users(ctx: AppContext, user_ids: list[str], day: str) -> int:
    sent = 0
    for user in await recipients_model.users_by_ids(ctx.db, [ObjectId(u) for u in user_ids]):
        if jobs.is_stopping(ctx):
            raise jobs.Retry(defer=1)  # the digests already sent are not sent again
        result = await send_digest(ctx, user, day)
        sent += bool(result and result.created)
    return sent


# -- one digest -----------------------------------------------------------------------------

async def send_digest(ctx: AppContext, user: dict[str, Any], day: str,
                      now: datetime | None = None) -> NotifyResult | None:
    """The user's digest for ``day``; None when there is nothing to report."""
    now = now or ctx.clock.now()
    since = now - timedelta(hours=24)
    orgs = await _secretary_orgs(ctx, user)
    items: list[DigestItem] = []
    for name, source in ctx.registry.digest_sources.items():
        try:
            items.extend(await source(ctx, user, orgs, since))
        except Exception:  # one broken source must not cost the secretary the digest
            log.exception("digest source %s failed", name)
    waiting = await _pending(ctx, user["_id"], now)
    if waiting:
        items.append(DigestItem("新通知", f"{len(waiting)}条新通知", "/admin/inbox"))
    if not items:
        return None
    data = {"headline": f"您有{len(items)}项待办和动态", "date": day,
            "items": "；".join(i.text for i in items)}
    result = await notify.notify(ctx, [Recipient(user_id=user["_id"])], "digest", data,
                                 subject=f"digest:{user['_id']}:{day}")
    await outbox_model.mark_digested(ctx.db, [d["_id"] for d in waiting])
    return result


async def _secretary_orgs(ctx: AppContext, user: dict[str, Any]) -> list[dict[str, Any]]:
    ids = [r["org_id"] for r in user.get("roles", []) if r["role"] == "secretary"]
    found = await recipients_model.orgs_by_ids(ctx.db, ids)
    return [found[i] for i in ids if i in found]


async def _pending(ctx: AppContext, user_id: ObjectId, now: datetime) -> list[dict[str, Any]]:
    """The user's notifications of digest kinds not yet reported (the last two days)."""
    horizon = ctx.clock.id_at(now - timedelta(days=2))
    return [d for d in await outbox_model.of_owner(ctx.db, user_id)
            if d.get("digest") == "pending" and d["_id"] > horizon]


# -- the sources that exist today ---------------------------------------------------------

async def unbound_members(ctx: AppContext, user: dict[str, Any], orgs: list[dict[str, Any]],
                          since: datetime) -> list[DigestItem]:
    """Members of the secretary's organisations who bound neither WeChat channel."""
    tree = await orgtree.snapshot(ctx)
    items = []
    for org in orgs:
        nodes = tree.with_counts(org["_id"]) or [(org["_id"], 0)]
        if sum(count for _, count in nodes) > UNBOUND_SCAN_LIMIT:
            continue
        unbound = 0
        for i in range(0, len(nodes), ORGS_PER_QUERY):
            people = await recipients_model.members_in_orgs(
                ctx.db, [n for n, _ in nodes[i:i + ORGS_PER_QUERY]])
            unbound += sum(1 for m in people if m.get("state") == "active"
                           and not m.get("oa_openid") and not m.get("mp_openid"))
        if unbound:
            items.append(DigestItem("未绑定微信", f"{org['name']}{unbound}名党员尚未绑定微信",
                                    f"/admin/orgs/{org['_id']}/members"))
    return items


async def member_changes(ctx: AppContext, user: dict[str, Any], orgs: list[dict[str, Any]],
                         since: datetime) -> list[DigestItem]:
    """Bindings, unbindings and imports of the last day (from the audit log)."""
    items = []
    after = ctx.clock.id_at(since)
    labels = {"member.bind": "绑定微信", "member.unbind": "解除绑定", "member.import": "导入党员"}
    for org in orgs:
        rows = await audit_model.page(ctx.db, org["_id"], None, after, 1000)
        counts = {a: sum(1 for r in rows if r["action"] == a) for a in labels}
        parts = [f"{labels[a]}{n}次" for a, n in counts.items() if n]
        if parts:
            items.append(DigestItem("党员动态", f"{org['name']}近一天：" + "，".join(parts),
                                    f"/admin/audit?org={org['_id']}&days=1"))
    return items
