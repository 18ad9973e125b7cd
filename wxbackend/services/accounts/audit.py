"""Audit log: every change and every view of unmasked personal data.

Called by services after their write succeeded, as pretix's
``log_action``::

    await audit.record(ctx, actor, "member.unmask", "member", member["_id"],
                       member["name"], member["org_ancestors"], {"fields": ["id_card"]})

The action, the target type and each detail field are declared by the writing
capability (:mod:`.audit_labels`, listed in its ``capability.py``), which is how
the page reads them in Chinese; ``tests/test_audit_log.py`` refuses an undeclared one.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from bson import ObjectId

from models import audit as audit_model
from models import orgs as orgs_model
from wxbackend.context import AppContext
from wxbackend.errors import InvalidInput, NotFound
from wxbackend.services.accounts.access import Actor
from wxbackend.services.accounts.audit_view import EntryView, present

PAGE_SIZE = 50

log = logging.getLogger(__name__)


async def record(ctx: AppContext, actor: Actor, action: str, target_type: str,
                 target_id: Any, label: str, org_ancestors: list[ObjectId],
                 details: dict[str, Any] | None = None) -> None:
    if ctx.registry.capabilities and action not in ctx.registry.audit_actions:
        # Written anyway (the record matters more than its label); the test of labels fails on it.
        log.error("audit action %r is declared by no capability", action)
    await audit_model.insert(ctx.db, {
        "at": ctx.clock.now(),
        "actor": {"id": actor.id, "name": actor.name, "system": actor.system},
        "ip": actor.ip,
        "action": action,
        "target": {"type": target_type, "id": target_id, "label": label},
        "org_id": org_ancestors[-1] if org_ancestors else None,
        "org_ancestors": list(org_ancestors),
        "details": details or {},
    })


async def page(ctx: AppContext, actor: Actor, scope_id: ObjectId, *, days: int = 7,
               before: ObjectId | None = None, limit: int = PAGE_SIZE) -> list[EntryView]:
    """The audit log of one organisation subtree, newest first, over ``days`` days, in Chinese."""
    if not 1 <= days <= 366:
        raise InvalidInput("bad_days", "查询天数应在1到366之间")
    actor.require("audit.view", [scope_id] if actor.system else await _path(ctx, scope_id))
    since = ctx.clock.id_at(ctx.clock.now() - timedelta(days=days))
    return await present(ctx, actor, await audit_model.page(ctx.db, scope_id, before, since, limit))


async def _path(ctx: AppContext, org_id: ObjectId) -> list[ObjectId]:
    org = await orgs_model.get(ctx.db, org_id)
    if org is None:
        raise NotFound("org_not_found", "找不到该组织")
    return org["org_ancestors"]
