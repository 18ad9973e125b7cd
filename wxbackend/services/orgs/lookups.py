"""Exact answers about a full ID-card number or phone: who may ask, how often, on record.

A page shows a member's numbers masked. Any answer to "is this full number
registered?" turns the hidden digits into a guessing game that a script wins
(nine requests recovered an ID-card number once the birth date was on the
page). So every such answer goes through this module::

    kind, value = exact_query("350203198503140011")    # ("id_card", "350203198503140011")
    await take(ctx, actor)            # one answer; TooManyRequests when none is left
    await give_back(ctx, actor)       # the create it was held for found no duplicate
    hidden = await found_registered(ctx, actor, "create", org, [existing])   # audited

Rules:

- Exact search needs ``member.unmask`` over the searched organisation: it
  tells nothing such an admin could not see by unmasking (audited either way).
- Each admin has ``[members] lookup_max`` answers per
  ``lookup_window_seconds``, one Redis counter shared by every process. A
  search costs one, taken *before* looking (parallel requests cannot exceed
  the limit). A create, or an edit that changes the ID-card number, holds one
  while it writes (so that parallel ones are bounded too) and gives it back
  unless the number was registered where the admin may not unmask. An
  import is refused while none is left; the numbers it finds registered
  elsewhere cost one each, and beyond what is left it names no row.
- Each exact search and each number found registered is audited with what
  kind of number, how many members matched and their ids; never the number.
- System actors (command line, jobs) are not counted.

Raises: Forbidden ``lookup_not_allowed``, TooManyRequests ``too_many_lookups``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from wxbackend.context import AppContext
from wxbackend.errors import Forbidden, TooManyRequests
from wxbackend.idcard import normalise_id_card
from wxbackend.services.accounts import audit
from wxbackend.services.accounts.access import Actor

PHONE = re.compile(r"^1[3-9]\d{9}$")
ID_CARD = re.compile(r"^\d{17}[\dX]$")
BUDGET_KEY = "members:lookups:{actor}"
# Member ids an audit entry lists; the count is always complete.
AUDITED_IDS = 50


def exact_query(query: str) -> tuple[str, str] | None:
    """``("id_card" | "phone", normalised value)`` for a full number, else None (a name)."""
    card = normalise_id_card(query)
    if ID_CARD.match(card):
        return "id_card", card
    query = query.strip()
    if PHONE.match(query):
        return "phone", query
    return None


def require_exact_search(actor: Actor, org: dict[str, Any]) -> None:
    if not actor.can("member.unmask", org["org_ancestors"]):
        raise Forbidden("lookup_not_allowed",
                        "按完整身份证号码或手机号码查找党员须有查看完整个人信息的权限，请按姓名查找")


def _key(actor: Actor) -> str:
    return BUDGET_KEY.format(actor=actor.id)


def _spent(ttl: int) -> TooManyRequests:
    minutes = max(1, (ttl + 59) // 60)
    return TooManyRequests("too_many_lookups",
                           f"按身份证号码或手机号码查找的次数过多，请{minutes}分钟后再试",
                           retry_after=max(ttl, 1))


async def _add(ctx: AppContext, actor: Actor, n: int) -> tuple[int, int]:
    settings = ctx.settings.members
    async with ctx.redis.pipeline(transaction=True) as pipe:
        # SET NX EX then INCRBY: the window starts with the first answer, atomically.
        pipe.set(_key(actor), 0, nx=True, ex=settings.lookup_window_seconds)
        pipe.incrby(_key(actor), n)
        pipe.ttl(_key(actor))
        _, count, ttl = await pipe.execute()
    return count, ttl


async def take(ctx: AppContext, actor: Actor) -> None:
    """Count one answer before it is looked up; TooManyRequests when none is left."""
    if actor.system:
        return
    count, ttl = await _add(ctx, actor, 1)
    if count > ctx.settings.members.lookup_max:
        raise _spent(ttl)


# Only while the window lasts: a DECR on an expired key would create one without expiry.
_GIVE_BACK = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('DECR', KEYS[1]) end
return 0
"""


async def give_back(ctx: AppContext, actor: Actor) -> None:
    """Return what :func:`take` held for an operation that answered nothing."""
    if not actor.system:
        await ctx.redis.eval(_GIVE_BACK, 1, _key(actor))


async def spend(ctx: AppContext, actor: Actor, n: int) -> bool:
    """Count ``n`` answers at once; whether they were all within the budget."""
    if actor.system or n <= 0:
        return True
    count, _ = await _add(ctx, actor, n)
    return count <= ctx.settings.members.lookup_max


async def ensure_budget(ctx: AppContext, actor: Actor) -> None:
    """Refuse, before looking, an operation that could reveal a registered number."""
    if actor.system:
        return
    async with ctx.redis.pipeline(transaction=False) as pipe:
        pipe.get(_key(actor))
        pipe.ttl(_key(actor))
        count, ttl = await pipe.execute()
    if int(count or 0) >= ctx.settings.members.lookup_max:
        raise _spent(ttl)


async def searched(ctx: AppContext, actor: Actor, org: dict[str, Any], kind: str,
                   found: Sequence[dict[str, Any]]) -> None:
    """The audit entry of one exact search (the number itself is not recorded)."""
    await audit.record(ctx, actor, "member.lookup", "org", org["_id"], org["name"], org["org_ancestors"],
                       {"by": kind, "found": len(found), "members": [m["_id"] for m in found][:AUDITED_IDS]})


async def found_registered(ctx: AppContext, actor: Actor, via: str, org: dict[str, Any],
                           existing: Sequence[dict[str, Any]]) -> int:
    """Audit the numbers an admin entered (create, edit, import into ``org``) that are
    registered already; how many of them lie outside what the admin may unmask (those
    are the answers the caller counts: the others the admin could look up anyway)."""
    if not existing:
        return 0
    hidden = sum(1 for m in existing if not actor.can("member.unmask", m["org_ancestors"]))
    await audit.record(ctx, actor, "member.duplicate", "org", org["_id"], org["name"], org["org_ancestors"],
                       {"via": via, "found": len(existing), "outside_scope": hidden,
                        "members": [m["_id"] for m in existing][:AUDITED_IDS]})
    return hidden
