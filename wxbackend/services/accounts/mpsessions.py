"""Mini-program sessions: our own opaque bearer tokens.

WeChat's ``session_key`` never leaves the server: it is kept in Redis beside
the session, and the phone gets a random token of ours, stored only as its
hash, with a sliding expiry. Tokens of a member are indexed so that unbinding
and every change of the member's state revoke them all::

    token = await open_session(ctx, openid="o1", unionid=None, session_key="...", member_id=None)
    admission = await admit(ctx, ip, token)   # rate counts + the session, one pipelined EVALSHA

A session remembers the member's state when it was opened (``member_state``):
a member who left (any state but ``active``) still signs in, and the API lets
that session reach only what former members may see. The state is copied, so
it is a first gate, not the truth: the member read from the database is.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from bson import ObjectId

from wxbackend.autopipe import AutoPipeline
from wxbackend.context import AppContext


@dataclass
class MemberSession:
    token_hash: str
    openid: str
    unionid: str | None
    member_id: ObjectId | None
    session_key: str
    member_state: str = "active"  # the member's state when the session was opened

    @property
    def former(self) -> bool:
        """A session opened for a member who had left (not active)."""
        return self.member_id is not None and self.member_state != "active"


def _key(token_hash: str) -> str:
    return f"mp:session:{token_hash}"


def _member_key(member_id: ObjectId) -> str:
    return f"mp:member-sessions:{member_id}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def open_session(ctx: AppContext, *, openid: str, unionid: str | None, session_key: str,
                       member_id: ObjectId | None, member_state: str = "active") -> str:
    token = secrets.token_urlsafe(32)
    token_hash = hash_token(token)
    ttl = ctx.settings.api.token_ttl_seconds
    fields = {"openid": openid, "unionid": unionid or "", "session_key": session_key,
              "member_id": str(member_id) if member_id else "", "member_state": member_state}
    async with ctx.redis.pipeline(transaction=True) as pipe:
        pipe.hset(_key(token_hash), mapping=fields)
        pipe.expire(_key(token_hash), ttl)
        if member_id:
            pipe.sadd(_member_key(member_id), token_hash)
            pipe.expire(_member_key(member_id), ttl)
        await pipe.execute()
    return token


async def attach_member(ctx: AppContext, session: MemberSession, member_id: ObjectId) -> None:
    """After binding (only active members bind): the same token now speaks for the member."""
    await ctx.redis.hset(_key(session.token_hash), mapping={"member_id": str(member_id),
                                                            "member_state": "active"})
    await ctx.redis.sadd(_member_key(member_id), session.token_hash)
    await ctx.redis.expire(_member_key(member_id), ctx.settings.api.token_ttl_seconds)
    session.member_id, session.member_state = member_id, "active"


async def revoke(ctx: AppContext, session: MemberSession) -> None:
    await ctx.redis.delete(_key(session.token_hash))
    if session.member_id:
        await ctx.redis.srem(_member_key(session.member_id), session.token_hash)


async def revoke_member(ctx: AppContext, member_id: ObjectId) -> int:
    """Every token of a member (unbinding, leaving the party): the count revoked."""
    hashes = await ctx.redis.smembers(_member_key(member_id))
    if hashes:
        await ctx.redis.delete(*[_key(h.decode()) for h in hashes])
    await ctx.redis.delete(_member_key(member_id))
    return len(hashes)


# One round trip for what every API request needs: count the IP, load and
# slide the session, count its user (fixed one-minute windows).
_ADMIT = """
local function hit(key, window)
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('EXPIRE', key, window) end
  return n
end
local window, bucket = tonumber(ARGV[1]), ARGV[2]
local ip = hit('rl:api:ip:' .. ARGV[3] .. ':' .. bucket, window)
if #KEYS == 0 then return {ip, 0, {}} end
local session = redis.call('HGETALL', KEYS[1])
if #session == 0 then return {ip, 0, session} end
redis.call('EXPIRE', KEYS[1], ARGV[4])
-- The member's index of tokens slides with them: else a token in daily use outlives
-- its index, and revoking the member's tokens would miss it.
local member = redis.call('HGET', KEYS[1], 'member_id')
if member and member ~= '' then redis.call('EXPIRE', 'mp:member-sessions:' .. member, ARGV[4]) end
local openid = redis.call('HGET', KEYS[1], 'openid')
return {ip, hit('rl:api:user:' .. openid .. ':' .. bucket, window), session}
"""


@dataclass
class Admission:
    ip_count: int
    user_count: int
    session: MemberSession | None
    retry_after: int


async def admit(ctx: AppContext, ip: str, token: str | None, window: int = 60) -> Admission:
    """Count the request against the IP and the token's user, and load the session."""
    now = time.time()
    token_hash = hash_token(token) if token else None
    keys = [_key(token_hash)] if token_hash else []
    ip_count, user_count, raw = await AutoPipeline.of(ctx).eval(
        _ADMIT, keys, (window, int(now // window), ip, ctx.settings.api.token_ttl_seconds))
    session = None
    if raw:
        text = {raw[i].decode(): raw[i + 1].decode() for i in range(0, len(raw), 2)}
        member = text.get("member_id")
        # Sessions opened before states were kept count as active; the database check decides.
        session = MemberSession(token_hash, text["openid"], text.get("unionid") or None,
                                ObjectId(member) if member else None, text.get("session_key", ""),
                                text.get("member_state") or "active")
    return Admission(int(ip_count), int(user_count), session, max(1, window - int(now) % window))
