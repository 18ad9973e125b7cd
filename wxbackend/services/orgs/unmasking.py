"""A member's clear numbers by post/redirect/get.

The clear ID-card number, phone and birth date appear only after an audited
POST (:func:`members.unmask`). So that the page showing them is an ordinary
GET (the address bar, a reload and the back button behave), the POST leaves a
grant in Redis and redirects to the member's page, which spends it::

    token = await grant(ctx, actor, member_id, session_id)            # audited; 303 to ?shown=token
    clear = await redeem(ctx, actor, member, session_id, token)        # the numbers once, else None

A grant is spent by the first GET, lapses after ``GRANT_SECONDS``, and belongs
to one session and one member: another session (even of the same admin),
another member's page, a reload or a later visit shows the masked view. The
clear numbers never go to Redis; the GET decrypts them.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any

from bson import ObjectId

from wxbackend.context import AppContext
from wxbackend.services.accounts.access import Actor
from wxbackend.services.orgs import members

GRANT_SECONDS = 60
GRANT_KEY = "members:unmask:{holder}:{member}:{token}"
TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def _key(session_id: str, member_id: ObjectId, token: str) -> str:
    # The session id is a bearer secret: only its hash goes into a key name.
    holder = hashlib.sha256(session_id.encode()).hexdigest()
    return GRANT_KEY.format(holder=holder, member=member_id, token=token)


async def grant(ctx: AppContext, actor: Actor, member_id: str | ObjectId, session_id: str) -> str:
    """Record a view of the member's clear numbers (as :func:`members.unmask` does) and
    return the single-use token with which this session's next GET shows them."""
    member = await members.get_visible(ctx, actor, member_id)
    await members.unmask(ctx, actor, member["_id"])
    token = secrets.token_urlsafe(24)
    await ctx.redis.set(_key(session_id, member["_id"], token), b"1", ex=GRANT_SECONDS)
    return token


async def redeem(ctx: AppContext, actor: Actor, member: dict[str, Any], session_id: str | None,
                 token: str) -> dict[str, str] | None:
    """The clear numbers and birth date for the GET a live grant of this session allows
    (spending it); None otherwise, and the page shows the masked view."""
    if not session_id or not TOKEN.match(token):
        return None
    # DEL answers 1 to exactly one caller: two reloads racing cannot both spend it.
    if not await ctx.redis.delete(_key(session_id, member["_id"], token)):
        return None
    # Still allowed now (a role may have been withdrawn since the POST).
    if not actor.can("member.unmask", member["org_ancestors"]):
        return None
    return {**members.clear_numbers(ctx, member), "birth_date": member.get("birth_date") or ""}
