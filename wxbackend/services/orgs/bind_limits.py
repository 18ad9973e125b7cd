"""How many wrong identities binding accepts: per openid, per address, per name, city-wide.

Binding asks for name + ID-card number (+ phone); each wrong answer is a guess
at somebody's ID-card number. One counter per WeChat account is not enough:
new accounts are free. So each try is counted against four limits at once
(``[wechat] bind_*`` settings):

- ``openid``: the WeChat account (``bind_max_failures`` / ``bind_lockout_seconds``);
- ``ip``: the client address, an IPv6 address by its /64 (an attacker holds the
  whole prefix): ``bind_ip_max_failures`` / ``bind_ip_lockout_seconds``;
- ``name``: the person named on the form, whoever types it (``bind_target_*``).
  Every try that could succeed for a member carries that member's name, so
  this bounds the guesses at one member however many accounts and addresses
  make them. The key is a blind index of the cleaned name: the same for a
  name on record or not, so a lock says nothing about who exists;
- ``total``: the whole city (``bind_total_*``), a brake on a spread-out attack.

A try is taken *before* the identity is checked, in one Lua call that refuses
it when any counter is used up (refused tries neither count nor extend a lock),
so parallel guesses cannot exceed a limit. A wrong try stays counted; one that
uses a counter up locks it for that counter's full period from then. A right
try gives its counts back (the openid starts afresh)::

    attempt = await bind_limits.take(ctx, bind_limits.limits_for(ctx, "oa", openid, ip, name))
    if right:
        await bind_limits.succeeded(ctx, attempt)
    else:
        error, locked = await bind_limits.failed(ctx, attempt)   # locked: the limits it used up
        raise error
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from wxbackend.context import AppContext
from wxbackend.errors import DomainError, TooManyRequests

# The same key as before the other limits existed: locks in place survive a deploy.
OPENID_KEY = "wx:bind:fail:{channel}:{openid}"
IP_KEY = "wx:bind:fail-ip:{ip}"
NAME_KEY = "wx:bind:fail-name:{bidx}"
TOTAL_KEY = "wx:bind:fail-total"
NAME_PURPOSE = "bind_name"  # blind-index purpose of names in Redis keys (no clear names there)

MISMATCH = "姓名、身份证号码或手机号码与党员档案不一致（档案中登记了手机号码的，须填写该号码）"

# Whose lock it is, in the words the person refused reads; {wait}: "30分钟" / "24小时".
LOCKED = {
    "openid": "尝试次数过多，绑定已锁定，请{wait}后再试",
    "ip": "当前网络的绑定尝试次数过多，绑定已锁定，请{wait}后再试",
    "name": "以该姓名绑定的尝试次数过多，绑定已锁定，请{wait}后再试；如有疑问请联系所在党支部",
    "total": "绑定尝试过于频繁，系统已暂停绑定，请{wait}后再试",
}

# KEYS: the counters; ARGV: max_1, period_1, max_2, period_2, ...
# Returns {0, count_1, count_2, ...} when admitted, else {i, ttl} of the first used-up counter.
_TAKE = """
for i = 1, #KEYS do
  if tonumber(redis.call('GET', KEYS[i]) or '0') >= tonumber(ARGV[2 * i - 1]) then
    local ttl = redis.call('TTL', KEYS[i])
    if ttl < 0 then
      redis.call('EXPIRE', KEYS[i], ARGV[2 * i])
      ttl = tonumber(ARGV[2 * i])
    end
    return {i, ttl}
  end
end
local counts = {0}
for i = 1, #KEYS do
  local n = redis.call('INCR', KEYS[i])
  if n == 1 then redis.call('EXPIRE', KEYS[i], ARGV[2 * i]) end
  counts[#counts + 1] = n
end
return counts
"""

# A right try gives its counts back, without creating a key or going below zero.
_GIVE_BACK = """
for i = 1, #KEYS do
  if tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then redis.call('DECR', KEYS[i]) end
end
return 0
"""


@dataclass(frozen=True)
class Limit:
    kind: str      # openid | ip | name | total
    key: str
    max: int
    seconds: int


@dataclass(frozen=True)
class Attempt:
    """One admitted try: the limits it counts against and each count with it."""

    limits: tuple[Limit, ...]
    counts: tuple[int, ...]

    @property
    def remaining(self) -> int:
        return min(limit.max - count for limit, count in zip(self.limits, self.counts, strict=True))


def clean_ip(ip: str) -> str:
    """The address as counted: IPv4 as is, IPv6 by its /64, an IPv4-mapped one as IPv4."""
    try:
        address = ipaddress.ip_address((ip or "").strip())
    except ValueError:
        return "-"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    return str(address)


def limits_for(ctx: AppContext, channel: str, openid: str, ip: str, name: str) -> tuple[Limit, ...]:
    """The four limits of a try; ``name`` is the cleaned name of the form."""
    s = ctx.settings.wechat
    return (
        Limit("openid", OPENID_KEY.format(channel=channel, openid=openid),
              s.bind_max_failures, s.bind_lockout_seconds),
        Limit("ip", IP_KEY.format(ip=clean_ip(ip)), s.bind_ip_max_failures, s.bind_ip_lockout_seconds),
        Limit("name", NAME_KEY.format(bidx=name_index(ctx, name)),
              s.bind_target_max_failures, s.bind_target_lockout_seconds),
        Limit("total", TOTAL_KEY, s.bind_total_max_failures, s.bind_total_lockout_seconds),
    )


def name_index(ctx: AppContext, name: str) -> str:
    return ctx.cipher.blind_index(name, NAME_PURPOSE)


def wait_text(seconds: int) -> str:
    minutes = max(1, (seconds + 59) // 60)
    return f"{minutes}分钟" if minutes <= 120 else f"{(minutes + 59) // 60}小时"


def locked_error(kind: str, seconds: int) -> TooManyRequests:
    seconds = max(int(seconds), 1)
    return TooManyRequests("bind_locked", LOCKED[kind].format(wait=wait_text(seconds)), retry_after=seconds)


def mismatch_error(remaining: int) -> DomainError:
    # The same words for every wrong answer, whichever part was wrong, and for a right
    # one that cannot bind (bound elsewhere, no longer active): nothing to tell them apart.
    return DomainError("bind_mismatch", f"{MISMATCH}。还可尝试{remaining}次。"
                                        "如确认填写无误，请联系所在党支部。")


async def take(ctx: AppContext, limits: tuple[Limit, ...]) -> Attempt:
    """Count one try against every limit, or refuse it (429 ``bind_locked``) if one is used up."""
    args: list[int] = []
    for limit in limits:
        args += [limit.max, limit.seconds]
    reply = await ctx.redis.eval(_TAKE, len(limits), *(lim.key for lim in limits), *args)
    verdict = int(reply[0])
    if verdict:
        raise locked_error(limits[verdict - 1].kind, int(reply[1]))
    return Attempt(limits, tuple(int(n) for n in reply[1:]))


async def succeeded(ctx: AppContext, attempt: Attempt) -> None:
    """A right try: the openid starts afresh, the other counters get this try back."""
    openid, *others = attempt.limits
    await ctx.redis.delete(openid.key)
    await ctx.redis.eval(_GIVE_BACK, len(others), *(lim.key for lim in others))


async def failed(ctx: AppContext, attempt: Attempt) -> tuple[DomainError, list[Limit]]:
    """A wrong try: the answer, and the limits this try used up (now locked)."""
    locked = [lim for lim, n in zip(attempt.limits, attempt.counts, strict=True) if n >= lim.max]
    if not locked:
        return mismatch_error(attempt.remaining), []
    async with ctx.redis.pipeline(transaction=False) as pipe:
        for limit in locked:
            # The lock lasts the full period from the try that used the counter up.
            pipe.expire(limit.key, limit.seconds)
        await pipe.execute()
    # Tries are admitted only below the limit, so the try that reaches it is the one
    # that locks it: exactly one per lock, which is when the secretaries are told.
    return locked_error(locked[0].kind, locked[0].seconds), locked
