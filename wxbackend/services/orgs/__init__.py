"""Organisations: the tree of 党委 > 党总支 > 党支部 > 党小组.

Structure changes (create, move, dissolve, upgrade) keep three things true:
each document's ``ancestors``/``org_ancestors`` path, the maintained
counters, and the generation number that tells every process to reload its
tree snapshot (:mod:`wxbackend.services.orgs.orgtree`)::

    org = await orgs.create(ctx, actor, parent_id, name="第一党支部", org_type="branch",
                            category="organ")
    await orgs.move(ctx, actor, org["_id"], new_parent_id)
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from bson import ObjectId

from models import members as members_model
from models import orgs as orgs_model
from models.enums import ORG_CATEGORIES, ORG_PARENT_TYPES, ORG_TYPES, term_years_for
from wxbackend.context import AppContext
from wxbackend.errors import Conflict, DomainError, InvalidInput, NotFound, object_id
from wxbackend.services.accounts import audit
from wxbackend.services.accounts.access import Actor
from wxbackend.services.orgs import orgtree

MAX_NAME = 60


def parse_id(raw: str | ObjectId, code: str = "org_not_found") -> ObjectId:
    return object_id(raw, code, "找不到该组织")


async def get(ctx: AppContext, org_id: ObjectId) -> dict[str, Any]:
    org = await orgs_model.get(ctx.db, org_id)
    if org is None:
        raise NotFound("org_not_found", "找不到该组织")
    return org


async def by_code(ctx: AppContext, code: str) -> dict[str, Any]:
    """The organisation with this code, or InvalidInput ``org_code_unknown``."""
    org = await orgs_model.get_by_code(ctx.db, code)
    if org is None:
        raise InvalidInput("org_code_unknown", "找不到该组织编码")
    return org


async def view(ctx: AppContext, actor: Actor, org_id: str | ObjectId) -> dict[str, Any]:
    """An organisation the actor may see, or NotFound/Forbidden."""
    org = await get(ctx, parse_id(org_id))
    actor.require("org.view", org["org_ancestors"])
    return org


async def children(ctx: AppContext, actor: Actor, org: dict[str, Any]) -> list[dict[str, Any]]:
    actor.require("org.view", org["org_ancestors"])
    return await orgs_model.children(ctx.db, org["_id"])


async def breadcrumbs(ctx: AppContext, org: dict[str, Any]) -> list[dict[str, Any]]:
    tree = await orgtree.snapshot(ctx)
    return [tree.nodes[i] for i in org["ancestors"] if i in tree.nodes]


def term_end(org: dict[str, Any]) -> date | None:
    if not org.get("term_start"):
        return None
    start = date.fromisoformat(org["term_start"])
    try:
        return start.replace(year=start.year + org["term_years"])
    except ValueError:  # 29 February
        return start.replace(year=start.year + org["term_years"], day=28)


def term_overdue(org: dict[str, Any], today: date) -> bool:
    end = term_end(org)
    return end is not None and end < today


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > MAX_NAME:
        raise InvalidInput("org_name", f"组织名称不能为空，且不超过{MAX_NAME}个字")
    return name


def _check_parent(org_type: str, parent: dict[str, Any] | None) -> None:
    if org_type not in ORG_TYPES:
        raise InvalidInput("org_type", "组织类型应为党委、党总支、党支部或党小组")
    if parent is None:
        if org_type != "committee":
            raise DomainError("org_parent_type", "只有党委可以作为顶级组织")
        return
    if parent["status"] != "active":
        raise DomainError("org_dissolved", "上级组织已撤销")
    if parent["type"] not in ORG_PARENT_TYPES[org_type]:
        raise DomainError("org_parent_type",
                          f"{ORG_TYPES[org_type]}不能设在{ORG_TYPES[parent['type']]}之下")


def new_document(name: str, org_type: str, category: str, parent: dict[str, Any] | None,
                 code: str, position: int, term_start: str | None = None,
                 _id: ObjectId | None = None, *, now: datetime) -> dict[str, Any]:
    """A fresh organisation document (also used by the seed's bulk insert)."""
    _id = _id or ObjectId()
    ancestors = list(parent["org_ancestors"]) if parent else []
    return {
        "_id": _id, "code": code, "name": name, "type": org_type, "category": category,
        "status": "active", "parent_id": parent["_id"] if parent else None,
        "ancestors": ancestors, "org_ancestors": [*ancestors, _id], "depth": len(ancestors),
        "position": position, "secretary": None, "committee": [],
        "term_start": term_start, "term_years": term_years_for(org_type, category),
        "member_count": 0, "full_member_count": 0, "subtree_member_count": 0, "child_count": 0,
        "created_at": now, "updated_at": now,
    }


async def create(ctx: AppContext, actor: Actor, parent_id: ObjectId | None, *, name: str,
                 org_type: str, category: str, code: str | None = None,
                 term_start: str | None = None) -> dict[str, Any]:
    name = _check_name(name)
    if category not in ORG_CATEGORIES:
        raise InvalidInput("org_category", "组织类别无效")
    parent = await get(ctx, parent_id) if parent_id is not None else None
    if parent is None and not actor.system:
        actor.require("org.structure", [])  # only the system creates roots
    if parent is not None:
        actor.require("org.structure", parent["org_ancestors"])
    _check_parent(org_type, parent)
    if term_start:
        _check_date(term_start, "term_start")
    code = code or f"O{ObjectId()}"[-12:].upper()
    if await orgs_model.get_by_code(ctx.db, code):
        raise Conflict("org_code_taken", "组织编码已被使用")
    position = await orgs_model.next_position(ctx.db, parent["_id"] if parent else None)
    doc = new_document(name, org_type, category, parent, code, position, term_start,
                       now=ctx.clock.now())
    await orgs_model.insert(ctx.db, doc)
    await orgs_model.adjust_child_count(ctx.db, doc["parent_id"], +1)
    await orgtree.invalidate(ctx)
    await audit.record(ctx, actor, "org.create", "org", doc["_id"], name, doc["org_ancestors"],
                       {"type": org_type})
    return doc


async def rename(ctx: AppContext, actor: Actor, org_id: ObjectId, name: str) -> dict[str, Any]:
    org = await get(ctx, org_id)
    actor.require("org.edit", org["org_ancestors"])
    name = _check_name(name)
    updated = await orgs_model.update_if(ctx.db, org_id, {"status": "active"},
                                         {"$set": {"name": name, "updated_at": ctx.clock.now()}})
    if updated is None:
        raise DomainError("org_dissolved", "组织已撤销")
    await orgtree.invalidate(ctx)
    await audit.record(ctx, actor, "org.rename", "org", org_id, name, org["org_ancestors"],
                       {"from": org["name"], "to": name})
    return updated


async def update_details(ctx: AppContext, actor: Actor, org_id: ObjectId, *,
                         term_start: str | None, term_years: int | None,
                         category: str | None) -> dict[str, Any]:
    """Term and category; the secretary and committee have their own operations."""
    org = await get(ctx, org_id)
    actor.require("org.edit", org["org_ancestors"])
    changes: dict[str, Any] = {}
    if term_start is not None:
        changes["term_start"] = _check_date(term_start, "term_start") if term_start else None
    if term_years is not None:
        if not 1 <= term_years <= 5:
            raise InvalidInput("term_years", "任期应为1至5年")
        changes["term_years"] = term_years
    if category is not None:
        if category not in ORG_CATEGORIES:
            raise InvalidInput("org_category", "组织类别无效")
        changes["category"] = category
    if not changes:
        return org
    changes["updated_at"] = ctx.clock.now()
    updated = await orgs_model.update_if(ctx.db, org_id, {"status": "active"}, {"$set": changes})
    if updated is None:
        raise DomainError("org_dissolved", "组织已撤销")
    await audit.record(ctx, actor, "org.update", "org", org_id, org["name"], org["org_ancestors"],
                       {k: str(v) for k, v in changes.items() if k != "updated_at"})
    return updated


async def set_leadership(ctx: AppContext, actor: Actor, org_id: ObjectId, *,
                         secretary_id: ObjectId | None,
                         committee: list[tuple[ObjectId, str]]) -> dict[str, Any]:
    """Secretary and committee (支委会) members, all from this organisation's subtree."""
    org = await get(ctx, org_id)
    actor.require("org.edit", org["org_ancestors"])
    if len(committee) > 7:
        raise DomainError("committee_too_large", "委员会成员不超过7人")
    wanted = {m for m, _ in committee} | ({secretary_id} if secretary_id else set())
    people = {}
    for member_id in wanted:
        member = await members_model.get(ctx.db, member_id)
        if member is None or org_id not in member["org_ancestors"] or member["state"] != "active":
            raise DomainError("leader_not_in_org", "书记和委员须为本组织的在册党员")
        people[member_id] = member["name"]
    changes = {
        "secretary": {"member_id": secretary_id, "name": people[secretary_id]} if secretary_id else None,
        "committee": [{"member_id": m, "name": people[m], "duty": duty[:20]} for m, duty in committee],
        "updated_at": ctx.clock.now(),
    }
    updated = await orgs_model.update_if(ctx.db, org_id, {"status": "active"}, {"$set": changes})
    if updated is None:
        raise DomainError("org_dissolved", "组织已撤销")
    await audit.record(ctx, actor, "org.update", "org", org_id, org["name"], org["org_ancestors"],
                       {"secretary": changes["secretary"]["name"] if secretary_id else None,
                        "committee": [c["name"] for c in changes["committee"]]})
    return updated


async def move(ctx: AppContext, actor: Actor, org_id: ObjectId, new_parent_id: ObjectId) -> dict[str, Any]:
    """Put a subtree under another parent, rewriting every path that names it."""
    org = await get(ctx, org_id)
    parent = await get(ctx, new_parent_id)
    actor.require("org.structure", org["org_ancestors"])
    actor.require("org.structure", parent["org_ancestors"])
    if org_id in parent["org_ancestors"]:
        raise DomainError("org_move_into_descendant", "不能把组织调整到它自己或其下级组织之下")
    if org["status"] != "active":
        raise DomainError("org_dissolved", "组织已撤销")
    _check_parent(org["type"], parent)
    if parent["_id"] == org["parent_id"]:
        return org
    old_prefix, new_prefix = org["ancestors"], parent["org_ancestors"]
    moved = org["subtree_member_count"]
    nodes = await orgs_model.subtree(ctx.db, org_id)
    # Counters first leave the old ancestors, then join the new ones.
    await orgs_model.adjust_subtree_counts(ctx.db, old_prefix, -moved)
    # Capabilities with their own roll-ups per ancestor move them (Capability.subtree_moved).
    for hook in ctx.registry.subtree_moved:
        await hook(ctx, [n["_id"] for n in nodes], old_prefix, new_prefix)
    for node in nodes:
        path = [*new_prefix, *node["org_ancestors"][len(old_prefix):]]
        await orgs_model.collection(ctx.db).update_one(
            {"_id": node["_id"]},
            {"$set": {"org_ancestors": path, "ancestors": path[:-1], "depth": len(path) - 1}})
        for name in ctx.registry.scoped_collections:
            await ctx.db[name].update_many({"org_id": node["_id"]}, {"$set": {"org_ancestors": path}})
    position = await orgs_model.next_position(ctx.db, parent["_id"])
    await orgs_model.collection(ctx.db).update_one(
        {"_id": org_id}, {"$set": {"parent_id": parent["_id"], "position": position,
                                   "updated_at": ctx.clock.now()}})
    await orgs_model.adjust_subtree_counts(ctx.db, new_prefix, moved)
    await orgs_model.adjust_child_count(ctx.db, org["parent_id"], -1)
    await orgs_model.adjust_child_count(ctx.db, parent["_id"], +1)
    await orgtree.invalidate(ctx)
    await audit.record(ctx, actor, "org.move", "org", org_id, org["name"],
                       [*new_prefix, org_id], {"from": str(org["parent_id"]), "to": str(parent["_id"])})
    return await get(ctx, org_id)


async def dissolve(ctx: AppContext, actor: Actor, org_id: ObjectId) -> dict[str, Any]:
    """撤销: only an organisation with no members and no active child organisations."""
    org = await get(ctx, org_id)
    actor.require("org.structure", org["org_ancestors"])
    if org["parent_id"] is None:
        raise DomainError("org_is_root", "不能撤销顶级组织")
    now = ctx.clock.now()
    updated = await orgs_model.update_if(
        ctx.db, org_id, {"status": "active", "subtree_member_count": 0, "child_count": 0},
        {"$set": {"status": "dissolved", "dissolved_at": now, "updated_at": now}})
    if updated is None:
        current = await get(ctx, org_id)
        if current["status"] != "active":
            raise DomainError("org_dissolved", "组织已撤销")
        raise DomainError("org_not_empty", "组织下仍有党员或下级组织，不能撤销")
    await orgs_model.adjust_child_count(ctx.db, org["parent_id"], -1)
    await orgtree.invalidate(ctx)
    await audit.record(ctx, actor, "org.dissolve", "org", org_id, org["name"], org["org_ancestors"])
    return updated


async def upgrade(ctx: AppContext, actor: Actor, org_id: ObjectId, to_type: str) -> dict[str, Any]:
    """Branch to 党总支 or 党委, 党总支 to 党委 (DOMAIN: >50 members / >100 members)."""
    org = await get(ctx, org_id)
    actor.require("org.structure", org["org_ancestors"])
    allowed = {"branch": ("general_branch", "committee"), "general_branch": ("committee",)}
    if to_type not in allowed.get(org["type"], ()):
        raise DomainError("org_upgrade_type", "只能将党支部升格为党总支或党委，或将党总支升格为党委")
    if org["type"] == "branch" and org["child_count"]:
        raise DomainError("org_has_groups", "请先调整该支部下的党小组，再升格")
    parent = await get(ctx, org["parent_id"]) if org["parent_id"] else None
    _check_parent(to_type, parent)
    updated = await orgs_model.update_if(
        ctx.db, org_id, {"status": "active", "type": org["type"]},
        {"$set": {"type": to_type, "term_years": term_years_for(to_type, org["category"]),
                  "updated_at": ctx.clock.now()}})
    if updated is None:
        raise Conflict("org_changed", "组织已被其他人修改，请刷新后重试")
    await orgtree.invalidate(ctx)
    await audit.record(ctx, actor, "org.upgrade", "org", org_id, org["name"], org["org_ancestors"],
                       {"from": org["type"], "to": to_type})
    return updated


def _check_date(text: str, field: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise InvalidInput(f"bad_{field}", "日期格式应为 YYYY-MM-DD") from None


def member_org_check(org: dict[str, Any]) -> None:
    """Members belong to a branch (党支部) that is active."""
    if org["status"] != "active":
        raise DomainError("org_dissolved", "该组织已撤销，不能接收党员")
    if org["type"] != "branch":
        raise DomainError("member_org_type", "党员应编入党支部")
