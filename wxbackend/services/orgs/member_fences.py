"""Name fences: pages inside a large organisation that read about what they show.

SecantusDB reads every document a query matches before it applies sort and
limit, so "the first 50 of a branch of 1,200, by name" reads 1,200 documents
however the query is written, unless its filter is itself a tight range. An
organisation of more than ``LARGE`` members is therefore cut into consecutive
name intervals of about ``FENCE_SIZE`` members; the bounds between them (the
fences) and the members counted in each interval are kept in Redis, shared by
every process::

    rows = await read(ctx, branch_id, member_count, key=None, want=51)             # first page
    rows = await read(ctx, branch_id, member_count, key=("陈伟", oid), want=51)     # after a row
    rows = await read(ctx, branch_id, member_count, key=("陈伟", oid), want=51, reverse=True)

A read asks, as a rule in one query, for the run of whole intervals that
should hold ``want`` rows, and gets them in (name, _id) order (descending when
``reverse``), possibly more than ``want``.

Fences only partition the names: any sorted list of them gives the right rows,
so members added, renamed or moved since they were cut cost reads, never
correctness. The intervals a read covers entirely are counted on the spot: an
interval grown past ``2 * FENCE_SIZE`` is cut again, a changed count written
back. The first read of an organisation without fences reads its names once
(one query, the names only) to cut them. Namesakes are never split (a bound is
a name), so a branch where a hundred people share one name reads them together.
"""

from __future__ import annotations

import json
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from bson import ObjectId

from models import members as members_model
from wxbackend.context import AppContext

# Small intervals keep a read close to the page: it overshoots by at most about one.
FENCE_SIZE = 10
# Organisations up to this many members are read whole: one query, no fences.
LARGE = 100
FENCES_KEY = "members:fences:{org}"
# Fences of an organisation nobody lists lapse; the next list cuts them afresh.
FENCES_TTL_SECONDS = 30 * 24 * 3600

Key = tuple[str, ObjectId]


def row_key(row: dict[str, Any]) -> Key:
    return row["name"], row["_id"]


@dataclass
class Fences:
    """Interval ``t`` holds the names in ``[bounds[t-1], bounds[t])`` (open at both ends)."""

    bounds: list[str]
    sizes: list[int]
    changed: bool = field(default=False, compare=False)

    @property
    def last(self) -> int:
        return len(self.bounds)

    def interval_of(self, name: str) -> int:
        return bisect_right(self.bounds, name)

    def low(self, t: int) -> str | None:
        return self.bounds[t - 1] if t > 0 else None

    def high(self, t: int) -> str | None:
        return self.bounds[t] if t < len(self.bounds) else None

    def learn(self, names: list[str], first: int, last: int) -> None:
        """``names`` (sorted) are all the members of intervals ``first..last``: recount
        those, cutting any that grew too large. From the top, so lower indexes hold."""
        for t in range(last, first - 1, -1):
            low, high = self.low(t), self.high(t)
            start = 0 if low is None else bisect_left(names, low)
            end = len(names) if high is None else bisect_left(names, high)
            inside = names[start:end]
            if len(inside) > 2 * FENCE_SIZE:
                self._cut(t, inside)
            elif len(inside) != self.sizes[t]:
                self.sizes[t] = len(inside)
                self.changed = True

    def _cut(self, t: int, names: list[str]) -> None:
        new_bounds = cut_points(names)
        edges = [0, *(bisect_left(names, b) for b in new_bounds), len(names)]
        sizes = [b - a for a, b in pairwise(edges)]
        if not new_bounds and self.sizes[t] == len(names):
            return  # namesakes only: nothing to cut, nothing new
        self.bounds[t:t] = new_bounds
        self.sizes[t:t + 1] = sizes
        self.changed = True


def cut_points(names: list[str]) -> list[str]:
    """Bounds that cut sorted ``names`` into runs of about ``FENCE_SIZE``, at name changes."""
    points: list[str] = []
    for i in range(FENCE_SIZE, len(names), FENCE_SIZE):
        # A bound equal to the previous one (or to the first name) would cut off nothing.
        if names[i] != (points[-1] if points else names[0]):
            points.append(names[i])
    return points


def _key(org_id: ObjectId) -> str:
    return FENCES_KEY.format(org=org_id)


async def load(ctx: AppContext, org_id: ObjectId, count: int) -> Fences:
    """The fences of an organisation of about ``count`` members (none when it is small)."""
    if count <= LARGE:
        return Fences([], [count])
    raw = await ctx.redis.get(_key(org_id))
    if raw:
        stored = json.loads(raw)
        return Fences(stored["bounds"], stored["sizes"])
    names = await members_model.names_in_org(ctx.db, org_id)
    fences = Fences([], [len(names)])
    fences.learn(names, 0, 0)
    fences.changed = True
    return fences


async def save(ctx: AppContext, org_id: ObjectId, fences: Fences) -> None:
    # Last writer wins: whichever process's fences survive, they partition the names.
    if fences.changed:
        value = json.dumps({"bounds": fences.bounds, "sizes": fences.sizes}, ensure_ascii=False)
        await ctx.redis.set(_key(org_id), value.encode(), ex=FENCES_TTL_SECONDS)


async def forget(ctx: AppContext, org_id: ObjectId) -> None:
    """Drop an organisation's fences: its next list cuts them afresh (benchmarks, repairs)."""
    await ctx.redis.delete(_key(org_id))


async def read(ctx: AppContext, org_id: ObjectId, count: int, key: Key | None, want: int, *,
               reverse: bool = False) -> list[dict[str, Any]]:
    """At least ``want`` members of one organisation (all, if fewer) beyond ``key`` (after
    it, or before it when ``reverse``; from the first or the last when None), in order."""
    fences = await load(ctx, org_id, count)
    rows: list[dict[str, Any]] = []
    step = -1 if reverse else 1
    t = fences.interval_of(key[0]) if key else (fences.last if reverse else 0)
    partial = key is not None  # the first interval is read from the key on: not recounted
    while len(rows) < want and 0 <= t <= fences.last:
        # Where in its interval the key lies is unknown: count none of it. A few more
        # rows read cost less than a second query.
        u, planned = t, 0 if partial else fences.sizes[t]
        while planned < want - len(rows) and 0 <= u + step <= fences.last:
            u += step
            planned += fences.sizes[u]
        first, last = min(t, u), max(t, u)
        low, high, through = fences.low(first), fences.high(last), False
        if partial and reverse:
            high, through = key[0], True
        elif partial:
            low = key[0]
        docs = await members_model.in_org_range(ctx.db, org_id, low, high, through=through)
        docs.sort(key=row_key, reverse=reverse)
        if count > LARGE:
            # Recount the intervals read whole: all but the one the key cuts.
            whole = (first + int(partial and not reverse), last - int(partial and reverse))
            if whole[0] <= whole[1]:
                fences.learn(sorted(d["name"] for d in docs), *whole)
        rows.extend(d for d in docs if key is None or (row_key(d) < key if reverse else row_key(d) > key))
        # Continue from the bound where this read stopped (cutting moved the indexes).
        edge = low if reverse else high
        if edge is None:
            break
        t = fences.interval_of(edge) - (1 if reverse else 0)
        partial = False
    if count > LARGE:
        await save(ctx, org_id, fences)
    return rows
