"""Password-guessing limits of the management web, per username and per IP address.

A try is counted *before* the password is checked, in one Lua call that also
refuses it when either counter is used up, so a burst of parallel logins
cannot reach the password check more often than the limit, and a right
password that arrives over the limit is refused like a wrong one::

    attempt = await lockout.take_try(ctx, "east", ip="10.0.0.1")   # TooManyRequests when over
    if password_ok:
        await lockout.succeeded(ctx, attempt)    # the name starts afresh
    elif attempt.used_up:
        ...                                      # this failure locked the name: audit it

Usernames are counted whether or not they exist (the key is a hash of the
lower-cased name), so an unknown name locks and answers exactly as a known
one does. Reason codes: ``account_locked`` (429, the name),
``login_rate_limited`` (429, the address).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from wxbackend.context import AppContext
from wxbackend.errors import TooManyRequests

# KEYS[1] the name's counter, KEYS[2] the address's; ARGV max per name, max per
# address, window (s). Returns {0, name count} when admitted, else {1 or 2, ttl}.
# Refused tries neither count nor extend the window: the lock ends on time.
_TAKE = """
local function over(key, limit)
  return tonumber(redis.call('GET', key) or '0') >= tonumber(limit)
end
if over(KEYS[1], ARGV[1]) then return {1, redis.call('TTL', KEYS[1])} end
if over(KEYS[2], ARGV[2]) then return {2, redis.call('TTL', KEYS[2])} end
local n = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return {0, n}
"""

# A success gives the address its try back (only failures stay counted there),
# without creating the key or pushing it below zero.
_GIVE_BACK = """
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then redis.call('DECR', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Try:
    """One admitted try: whose counters it used and the name's count with it."""

    name_key: str
    ip_key: str
    count: int
    limit: int

    @property
    def used_up(self) -> bool:
        return self.count >= self.limit


def name_key(username: str) -> str:
    # Hashed: unknown names are attacker-chosen strings of any length.
    digest = hashlib.sha256(username.strip().lower().encode()).hexdigest()
    return f"login:tries:name:{digest}"


def _ip_key(ip: str) -> str:
    return f"login:tries:ip:{ip or '-'}"


def _minutes(seconds: int) -> int:
    return max(1, (seconds + 59) // 60)


async def take_try(ctx: AppContext, username: str, ip: str) -> Try:
    """Count one password check for ``username`` from ``ip``, or refuse it (429)."""
    security = ctx.settings.security
    keys = (name_key(username), _ip_key(ip))
    verdict, value = await ctx.redis.eval(_TAKE, 2, *keys, security.login_max_failures,
                                          security.login_ip_max_failures, security.login_lockout_seconds)
    if verdict == 0:
        return Try(keys[0], keys[1], int(value), security.login_max_failures)
    ttl = max(int(value), 1)
    if verdict == 1:
        raise TooManyRequests("account_locked", f"登录失败次数过多，账号已锁定，请{_minutes(ttl)}分钟后再试",
                              retry_after=ttl)
    raise TooManyRequests("login_rate_limited", f"该网络地址登录失败次数过多，请{_minutes(ttl)}分钟后再试",
                          retry_after=ttl)


async def succeeded(ctx: AppContext, attempt: Try) -> None:
    """The password was right: the name starts afresh, the address gets its try back."""
    await ctx.redis.delete(attempt.name_key)
    await ctx.redis.eval(_GIVE_BACK, 1, attempt.ip_key)


async def clear(ctx: AppContext, username: str) -> None:
    """Unlock a name at once (a higher admin has just reset its password)."""
    await ctx.redis.delete(name_key(username))
