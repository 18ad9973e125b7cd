"""A member's recent activity, gathered from every capability.

Each capability registers a source: an async function returning entries for
one member. Meetings, dues and study add theirs as they are built::

    @source
    async def meetings(ctx, member, limit): ...

    entries = await timeline(ctx, member, limit=20)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from models import audit as audit_model
from wxbackend.context import AppContext


@dataclass
class Entry:
    at: datetime
    kind: str
    title: str


Source = Callable[[AppContext, dict[str, Any], int], Awaitable[list[Entry]]]


async def timeline(ctx: AppContext, member: dict[str, Any], limit: int = 20) -> list[Entry]:
    entries: list[Entry] = []
    for fetch in ctx.registry.timeline_sources:
        entries.extend(await fetch(ctx, member, limit))
    entries.sort(key=lambda e: e.at, reverse=True)
    return entries[:limit]


# What the member sees of their own record's history (admins' views are not shown).
MEMBER_EVENTS = {
    "member.create": "加入党员信息库", "member.bind": "绑定微信", "member.unbind": "解除微信绑定",
    "member.state": "党员状态变更", "member.update": "党员信息更新",
}


async def record_events(ctx: AppContext, member: dict[str, Any], limit: int) -> list[Entry]:
    rows = await audit_model.for_target(ctx.db, member["_id"], limit=limit * 3)
    return [Entry(r["at"], r["action"], MEMBER_EVENTS[r["action"]])
            for r in rows if r["action"] in MEMBER_EVENTS][:limit]
