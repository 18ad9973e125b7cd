"""An in-process snapshot of the organisation tree, for tree-ordered pages.

SecantusDB (like any MongoDB without an index that serves the sort) reads
every document a query matches before it applies ``limit``, so "the first 50
of a district's 20,000 members" must not be one query over the subtree.
Instead a page walks the district's branches in tree order using this
snapshot (with the maintained member counters) and asks the database only for
the members of the few branches the page shows.

The snapshot is shared by all requests of a process and reloaded when the
generation number in Redis moves (any structure change bumps it), so several
server processes stay consistent::

    tree = await snapshot(ctx)
    tree.branches_in(district_id)   # [(branch_id, member_count), ...] in tree order
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId

from models import orgs as orgs_model
from wxbackend.context import AppContext

GENERATION_KEY = b"orgtree:generation"
# How long a process trusts its snapshot without asking Redis (seconds).
RECHECK_SECONDS = 1.0


@dataclass
class OrgTree:
    generation: bytes | None
    nodes: dict[ObjectId, dict[str, Any]]
    children: dict[ObjectId | None, list[ObjectId]]
    # Tree (pre-)order of every node, and where each node's subtree ends in it.
    order: list[ObjectId] = field(default_factory=list)
    index: dict[ObjectId, int] = field(default_factory=dict)
    end: dict[ObjectId, int] = field(default_factory=dict)
    checked_at: float = 0.0

    @classmethod
    def build(cls, docs: list[dict[str, Any]], generation: bytes | None) -> OrgTree:
        nodes = {d["_id"]: d for d in docs}
        children: dict[ObjectId | None, list[ObjectId]] = {}
        for doc in sorted(docs, key=lambda d: (d.get("position", 0), d["name"])):
            children.setdefault(doc.get("parent_id"), []).append(doc["_id"])
        tree = cls(generation, nodes, children)
        stack = [(root, False) for root in reversed(children.get(None, []))]
        while stack:
            node, done = stack.pop()
            if done:
                tree.end[node] = len(tree.order)
                continue
            tree.index[node] = len(tree.order)
            tree.order.append(node)
            stack.append((node, True))
            stack.extend((c, False) for c in reversed(children.get(node, [])))
        return tree

    def subtree(self, org_id: ObjectId) -> list[ObjectId]:
        start = self.index.get(org_id)
        return [] if start is None else self.order[start:self.end[org_id]]

    def with_counts(self, org_id: ObjectId) -> list[tuple[ObjectId, int]]:
        """Every organisation of the subtree in tree order, with its member count as of
        the snapshot. Counts may be stale (members change without a new snapshot), so
        callers use them to size a batch, never to skip an organisation."""
        return [(i, self.nodes[i].get("member_count", 0)) for i in self.subtree(org_id)]

    def name(self, org_id: ObjectId) -> str:
        node = self.nodes.get(org_id)
        return node["name"] if node else "（未知组织）"


@dataclass
class TreeState:
    """A process's snapshot, and the lock that makes one request reload it for all."""

    tree: OrgTree | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


async def snapshot(ctx: AppContext) -> OrgTree:
    state = ctx.state(TreeState)
    tree = state.tree
    now = time.monotonic()
    if tree is not None and now - tree.checked_at < RECHECK_SECONDS:
        return tree
    generation = await ctx.redis.get(GENERATION_KEY)
    if tree is not None and tree.generation == generation:
        tree.checked_at = now
        return tree
    async with state.lock:  # one reload per process, however many requests wait
        tree = state.tree
        if tree is None or tree.generation != generation:
            tree = state.tree = OrgTree.build(await orgs_model.whole_tree(ctx.db), generation)
        tree.checked_at = time.monotonic()
        return tree


async def invalidate(ctx: AppContext) -> None:
    """Every process reloads its snapshot on its next use."""
    await ctx.redis.incr(GENERATION_KEY)
    ctx.state(TreeState).tree = None
