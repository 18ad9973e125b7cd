"""The audit log as a page shows it: stored entries read through the declared labels.

::

    entries = await present(ctx, viewer, rows)   # one query per kind of id on the page
    entries[0].action        # "批准请假"
    entries[0].details[0]    # DetailView("党员", (Part("张三", "/admin/members/..."),))

Ids in details are named with one batched query per subject kind (members,
organisations, meetings) for the whole page, never one per row, and only as far
as the viewer may see them; nothing here decrypts personal data.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import ObjectId

from wxbackend.capability import Registry
from wxbackend.context import AppContext
from wxbackend.services.accounts.access import Actor
from wxbackend.services.accounts.audit_labels import (
    COMMON,
    SYSTEM_ACTORS,
    AuditAction,
    AuditSubject,
    Detail,
    system_actor_label,
)

Names = dict[str, dict[Any, str]]  # subject kind -> id (or other key) -> name


@dataclass(frozen=True)
class Part:
    text: str
    link: str = ""


@dataclass(frozen=True)
class DetailView:
    label: str
    parts: tuple[Part, ...]


@dataclass(frozen=True)
class EntryView:
    id: ObjectId
    at: datetime
    actor: str
    ip: str
    action: str
    subject: str        # what the target is: 党员, 组织, 会议 ("" when undeclared)
    target: Part
    details: tuple[DetailView, ...]


async def present(ctx: AppContext, viewer: Actor, rows: list[dict[str, Any]]) -> list[EntryView]:
    """The page's entries in Chinese, ids named as far as ``viewer`` may see them."""
    names = await _resolve(ctx, viewer, rows)
    return [_entry(ctx.registry, row, names) for row in rows]


def actor_label(actor: dict[str, Any]) -> str:
    """Who acted; a process (seed, command line) by what it is, not its code name."""
    name = actor.get("name") or ""
    # Entries written before the flag existed: a process is an id-less known name.
    system = actor.get("system", actor.get("id") is None and name in SYSTEM_ACTORS)
    return system_actor_label(name) if system else name


def detail_spec(action: AuditAction | None, key: str) -> Detail | None:
    declared = action.details.get(key) if action is not None else None
    return declared or COMMON.get(key)


async def _resolve(ctx: AppContext, viewer: Actor, rows: list[dict[str, Any]]) -> Names:
    wanted: dict[str, set[Any]] = defaultdict(set)
    for row in rows:
        action = ctx.registry.audit_actions.get(row["action"])
        for key, value in row.get("details", {}).items():
            spec = detail_spec(action, key)
            if spec is not None and spec.ref:
                wanted[spec.ref].update(_keys(value))
    subjects = [s for kind in wanted if (s := ctx.registry.audit_subjects.get(kind)) and s.names]
    # One query per kind, run side by side: the page waits for the slowest, not the sum.
    found = await asyncio.gather(*(s.names(ctx, viewer, sorted(wanted[s.kind], key=str)) for s in subjects))
    return {s.kind: named for s, named in zip(subjects, found, strict=True)}


def _keys(value: Any) -> Iterable[Any]:
    """What a ref names: ids (some details store them as strings) or other codes (a kind)."""
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, str) and ObjectId.is_valid(item):
            yield ObjectId(item)
        elif isinstance(item, ObjectId | str) and item:
            yield item


def _entry(registry: Registry, row: dict[str, Any], names: Names) -> EntryView:
    action = registry.audit_actions.get(row["action"])
    target = row["target"]
    subject = registry.audit_subjects.get(target["type"])
    details = tuple(view for key, value in row.get("details", {}).items()
                    if (view := _detail(registry, detail_spec(action, key), key, value, names)))
    return EntryView(row["_id"], row["at"], actor_label(row["actor"]), row.get("ip", ""),
                     action.label if action else row["action"], subject.label if subject else "",
                     Part(str(target.get("label") or ""), _link(subject, target.get("id"))), details)


def _detail(registry: Registry, spec: Detail | None, key: str, value: Any,
            names: Names) -> DetailView | None:
    if spec is None:  # undeclared (the test of the labels fails first): shown as stored
        return DetailView(key, (Part(str(value)),))
    if spec.says_nothing(value):
        return None
    if spec.ref:
        return DetailView(spec.label, _named(registry.audit_subjects.get(spec.ref), value, names))
    items = value if isinstance(value, list) else [value]
    return DetailView(spec.label, tuple(Part(_text(spec, item)) for item in items) or (Part("无"),))


def _text(spec: Detail, value: Any) -> str:
    if spec.fmt is not None:
        return spec.fmt(value)
    if value is None:
        return "无"
    if isinstance(value, bool):
        return "是" if value else "否"
    return f"{spec.values.get(str(value), str(value))}{spec.unit}"


def _named(subject: AuditSubject | None, value: Any, names: Names) -> tuple[Part, ...]:
    ids = list(_keys(value))
    if subject is None or subject.names is None:
        return tuple(Part(str(i)) for i in ids) or (Part("无"),)
    known = names.get(subject.kind, {})
    parts = [Part(known[i], _link(subject, i)) for i in ids if i in known]
    unseen = sum(1 for i in ids if i not in known)
    if unseen:
        parts.append(Part(subject.unseen.format(unseen)))
    return tuple(parts) or (Part("无"),)


def _link(subject: AuditSubject | None, target_id: Any) -> str:
    if subject is None or not subject.link or not isinstance(target_id, ObjectId):
        return ""
    return subject.link.format(target_id)
