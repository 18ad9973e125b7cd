"""Member lists of the management side: a subtree in tree order, and search by name.

Both page by keyset cursors, forwards and backwards: a page never counts or
skips rows (SecantusDB reads every document a query matches, so an offset
would read all the pages before it, and a total would read the whole result)::

    first = await browse(ctx, actor, district)                          # MemberPage
    second = await browse(ctx, actor, district, after=first.next_cursor)
    again = await browse(ctx, actor, district, before=second.prev_cursor)   # first's rows
    found = await search_names(ctx, actor, district, "陈", after=None)

A subtree is listed organisation by organisation in tree order, by name then
id in each. Each query names only the organisations that fill the page (sized
by the tree snapshot's member counters), and an organisation of more than
:data:`member_fences.LARGE` members is read through its name fences, so a page
reads about what it shows. A search lists the subtree's members whose name
starts with the query, by name then id.

Raises InvalidInput ``bad_cursor``; Forbidden ``out_of_scope``.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId

from models import members as members_model
from wxbackend.context import AppContext
from wxbackend.errors import InvalidInput
from wxbackend.services import orgs
from wxbackend.services.accounts.access import Actor
from wxbackend.services.orgs import member_fences, orgtree
from wxbackend.services.orgs.member_fences import Key, row_key

PAGE_SIZE = 50
# Most organisations one page query may name; keeps the $in list small.
MAX_ORGS_PER_QUERY = 200


@dataclass
class MemberPage:
    """One page of a list; a cursor is None where nothing lies on that side."""

    rows: list[dict[str, Any]]
    next_cursor: str | None = None
    prev_cursor: str | None = None


def encode_cursor(row: dict[str, Any]) -> str:
    data = json.dumps([str(row["org_id"]), row["name"], str(row["_id"])], ensure_ascii=False)
    return base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[ObjectId, str, ObjectId]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        org_id, name, member_id = json.loads(raw)
        return ObjectId(org_id), str(name), ObjectId(member_id)
    except (ValueError, TypeError, InvalidId):
        raise InvalidInput("bad_cursor", "分页参数无效") from None


def _bad_cursor() -> InvalidInput:
    return InvalidInput("bad_cursor", "分页参数无效")


def _paged(rows: list[dict[str, Any]], limit: int, *, came_after: bool) -> MemberPage:
    """A forward read of ``limit + 1`` rows as a page."""
    shown = rows[:limit]
    return MemberPage(shown, next_cursor=encode_cursor(shown[-1]) if len(rows) > limit else None,
                      prev_cursor=encode_cursor(shown[0]) if came_after and shown else None)


def _paged_back(rows: list[dict[str, Any]], limit: int) -> MemberPage:
    """A backward read of ``limit + 1`` rows (nearest first) as a page; rows lie beyond it."""
    shown = rows[:limit][::-1]
    return MemberPage(shown, next_cursor=encode_cursor(shown[-1]), prev_cursor=encode_cursor(shown[0]))


async def page(ctx: AppContext, actor: Actor, scope_id: ObjectId, cursor: str | None = None,
               limit: int = PAGE_SIZE, *, org: dict[str, Any] | None = None,
               ) -> tuple[list[dict[str, Any]], str | None]:
    """Members of a subtree in tree order, after ``cursor``; with the next page's cursor.
    ``org`` is the scope's document when the caller has it already."""
    org = org if org is not None and org["_id"] == scope_id else await orgs.get(ctx, scope_id)
    found = await browse(ctx, actor, org, after=cursor, limit=limit)
    return found.rows, found.next_cursor


async def browse(ctx: AppContext, actor: Actor, org: dict[str, Any], *, after: str | None = None,
                 before: str | None = None, limit: int = PAGE_SIZE) -> MemberPage:
    """Members of ``org``'s subtree in tree order (branch by branch, by name in each):
    the first page, the page after the row of cursor ``after``, or the one before ``before``."""
    actor.require("member.view", org["org_ancestors"])
    tree = await orgtree.snapshot(ctx)
    # The scope's own counter from its document: the snapshot's may be older.
    nodes = [(i, org["member_count"] if i == org["_id"] else n) for i, n in tree.with_counts(org["_id"])]
    nodes = nodes or [(org["_id"], org["member_count"])]
    position = {org_id: i for i, (org_id, _) in enumerate(nodes)}
    cursor = before or after
    if not cursor:
        return _paged(await _walk(ctx, nodes, position, 0, None, limit + 1), limit, came_after=False)
    org_id, name, member_id = decode_cursor(cursor)
    if org_id not in position:
        raise _bad_cursor()
    start, key = position[org_id], (name, member_id)
    if not before:
        return _paged(await _walk(ctx, nodes, position, start, key, limit + 1), limit, came_after=True)
    rows = await _walk(ctx, nodes, position, start, key, limit + 1, reverse=True)
    if len(rows) <= limit:  # the start is near: show the first page whole
        return _paged(await _walk(ctx, nodes, position, 0, None, limit + 1), limit, came_after=False)
    return _paged_back(rows, limit)


async def _walk(ctx: AppContext, nodes: list[tuple[ObjectId, int]], position: dict[ObjectId, int],
                start: int, key: Key | None, want: int, *, reverse: bool = False) -> list[dict[str, Any]]:
    """At least ``want`` rows (all, if fewer) from organisation ``nodes[start]`` on (back
    towards the first when ``reverse``), in that organisation only those beyond ``key``."""
    step = -1 if reverse else 1
    rows: list[dict[str, Any]] = []
    i = start
    if key is not None:
        rows.extend(await member_fences.read(ctx, nodes[i][0], nodes[i][1], key, want, reverse=reverse))
        i += step
    while 0 <= i < len(nodes) and len(rows) < want:
        org_id, count = nodes[i]
        if count > member_fences.LARGE:
            rows.extend(await member_fences.read(ctx, org_id, count, None, want - len(rows), reverse=reverse))
            i += step
            continue
        # Small organisations together, as many as should fill the page.
        batch, planned = [], 0
        while (0 <= i < len(nodes) and nodes[i][1] <= member_fences.LARGE
               and len(batch) < MAX_ORGS_PER_QUERY and planned < want - len(rows)):
            batch.append(nodes[i][0])
            planned += nodes[i][1]
            i += step
        found = await members_model.in_orgs(ctx.db, batch)
        found.sort(key=lambda r: (position[r["org_id"]], r["name"], r["_id"]), reverse=reverse)
        rows.extend(found)
    return rows


async def search_names(ctx: AppContext, actor: Actor, org: dict[str, Any], query: str, *,
                       after: str | None = None, before: str | None = None,
                       limit: int = PAGE_SIZE) -> MemberPage:
    """Members of ``org``'s subtree whose name starts with ``query``, by name then id:
    the first page, the one after cursor ``after`` or the one before ``before``."""
    actor.require("member.view", org["org_ancestors"])
    prefix = query.strip()
    if not prefix:
        return MemberPage([])
    if before:
        rows = await _named(ctx, org["_id"], prefix, _key_of(before), limit + 1, reverse=True)
        if len(rows) > limit:
            return _paged_back(rows, limit)
        after = None  # the start is near: show the first page whole
    key = _key_of(after) if after else None
    return _paged(await _named(ctx, org["_id"], prefix, key, limit + 1), limit, came_after=key is not None)


def _key_of(cursor: str) -> Key:
    _, name, member_id = decode_cursor(cursor)
    return name, member_id


async def _named(ctx: AppContext, scope_id: ObjectId, prefix: str, key: Key | None, want: int, *,
                 reverse: bool = False) -> list[dict[str, Any]]:
    """``want`` rows (all, if fewer) of a name search beyond ``key``, nearest first. The
    query starts at the key's name, so its namesakes on the near side match too: the
    window widens past them."""
    side = {} if key is None else {"before": key[0]} if reverse else {"after": key[0]}
    fetch = want
    while True:
        found = await members_model.search_name_from(ctx.db, scope_id, prefix, fetch, **side)
        rows = [r for r in found if key is None or (row_key(r) < key if reverse else row_key(r) > key)]
        if len(found) < fetch or len(rows) >= want:
            return rows[:want]
        fetch += len(found) - len(rows)
