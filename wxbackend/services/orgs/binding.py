"""Binding a WeChat identity (official account or mini-program openid) to a member.

One implementation for both channels: the official account's OAuth page
(``channel="oa"``) and the mini-program's ``POST /api/v1/me/bind``
(``channel="mp"``). The member proves who they are with name + ID-card number
(+ phone), checked against the imported record::

    member = await binding.bind(ctx, "oa", openid, unionid=None, name="张三",
                                id_card="350203198503140011", phone="", ip="1.2.3.4")
    await binding.unbind(ctx, secretary, member["_id"], "oa")

Rules:

- Lookup by the ID-card blind index; the name must match. The phone is
  optional on the form *unless the record has one*, in which case it must
  match too. Whatever part is wrong, the answer is the same (no hint which
  part matched), and it costs one try.
- ``[wechat] bind_max_failures`` wrong tries lock binding for that openid for
  ``bind_lockout_seconds`` (Redis counter, taken *before* checking, so
  parallel guesses cannot exceed the limit). Malformed input (a number that is
  not an ID-card number) is refused without costing a try: it reveals nothing.
- One openid per member and one member per openid: conditional updates (set
  only where the field is absent) plus the unique sparse indexes.
- Only members in state ``active`` can bind.
- Binding and unbinding are audited (never with the ID-card number).

The follow state of the official account lives here too: a bound member's on
the member document, an unbound follower's in ``wechat_followers``.

:func:`identity_for` answers "who is this openid" for every chat message
without a database read: a per-process cache of slim member records, dropped
by every process within a second of any bind or unbind (a generation number
in Redis, as the organisation tree snapshot does), and entries live at most
``IDENTITY_TTL`` seconds so that other edits of a member (state, name) show
within a minute.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import redis.exceptions
from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from models import members as members_model
from models import wechat as followers_model
from models.enums import MEMBER_STATES
from wxbackend.context import AppContext
from wxbackend.errors import Conflict, DomainError, InvalidInput, TooManyRequests
from wxbackend.idcard import parse_id_card
from wxbackend.services.accounts import audit, mpsessions
from wxbackend.services.accounts.access import Actor
from wxbackend.services.orgs import members

log = logging.getLogger(__name__)

CHANNELS = {"oa": "oa_openid", "mp": "mp_openid"}
CHANNEL_LABELS = {"oa": "公众号", "mp": "小程序"}
FAIL_KEY = "wx:bind:fail:{channel}:{openid}"
PHONE = re.compile(r"^1[3-9]\d{9}$")
IDENTITY_GENERATION = "wx:bind:generation"
# How long a process trusts its identity cache without asking Redis, how long an
# entry lives at most, and how many entries a process keeps (seconds, seconds, count).
IDENTITY_RECHECK = 1.0
IDENTITY_TTL = 60.0
IDENTITY_MAX = 50_000
# What chat replies need of a member; the cache holds no personal data.
IDENTITY_FIELDS = ("_id", "name", "state", "party_status", "org_id", "org_ancestors",
                   "oa_openid", "mp_openid")
MISMATCH = "姓名、身份证号码或手机号码与党员档案不一致（档案中登记了手机号码的，须填写该号码）"


def openid_field(channel: str) -> str:
    if channel not in CHANNELS:
        raise InvalidInput("bad_channel", "绑定渠道应为公众号或小程序")
    return CHANNELS[channel]


def _check_openid(openid: str) -> str:
    if not openid or len(openid) > 128 or not openid.isascii():
        raise InvalidInput("bad_openid", "微信身份无效，请从公众号或小程序重新进入")
    return openid


def _clean_form(name: str, id_card: str, phone: str, today: date) -> tuple[str, str, str]:
    """Normalise the form; malformed input is refused without costing a try."""
    name = re.sub(r"\s+", "", name or "")
    if not name or len(name) > 30:
        raise InvalidInput("bind_name", "请填写姓名")
    card = parse_id_card(id_card or "", today=today).number
    phone = re.sub(r"[\s-]", "", phone or "")
    if phone and not PHONE.match(phone):
        raise InvalidInput("bind_phone", "手机号码应为11位，以1开头")
    return name, card, phone


def _matches(ctx: AppContext, member: dict[str, Any], name: str, phone: str) -> bool:
    if re.sub(r"\s+", "", member.get("name") or "") != name:
        return False
    if member.get("phone_bidx"):
        return bool(phone) and ctx.cipher.blind_index(phone, "phone") == member["phone_bidx"]
    return True


# -- the lockout counter -------------------------------------------------------

def _fail_key(channel: str, openid: str) -> str:
    return FAIL_KEY.format(channel=channel, openid=openid)


def _locked(ttl: int) -> TooManyRequests:
    minutes = max(1, (ttl + 59) // 60)
    return TooManyRequests("bind_locked", f"尝试次数过多，绑定已锁定，请{minutes}分钟后再试",
                           retry_after=max(ttl, 1))


async def _take_try(ctx: AppContext, channel: str, openid: str) -> int:
    """Count this try before checking; refuse when the tries are used up."""
    settings = ctx.settings.wechat
    key = _fail_key(channel, openid)
    async with ctx.redis.pipeline(transaction=True) as pipe:
        # SET NX EX then INCR: the window starts with the first try, atomically.
        pipe.set(key, 0, nx=True, ex=settings.bind_lockout_seconds)
        pipe.incr(key)
        pipe.ttl(key)
        _, count, ttl = await pipe.execute()
    if count > settings.bind_max_failures:
        raise _locked(ttl)
    return count


async def _wrong_try(ctx: AppContext, channel: str, openid: str, count: int) -> DomainError:
    settings = ctx.settings.wechat
    remaining = settings.bind_max_failures - count
    if remaining <= 0:
        # The lock lasts the full period from the last wrong try.
        await ctx.redis.expire(_fail_key(channel, openid), settings.bind_lockout_seconds)
        return _locked(settings.bind_lockout_seconds)
    return DomainError("bind_mismatch", f"{MISMATCH}。还可尝试{remaining}次")


# -- bind / unbind ---------------------------------------------------------------

async def bind(ctx: AppContext, channel: str, openid: str, unionid: str | None, name: str,
               id_card: str, phone: str, ip: str) -> dict[str, Any]:
    """Link ``openid`` to the member the form identifies; returns the member."""
    field = openid_field(channel)
    openid = _check_openid(openid)
    name, card, phone = _clean_form(name, id_card, phone, ctx.clock.today())
    count = await _take_try(ctx, channel, openid)
    member = await members_model.by_id_card(ctx.db, ctx.cipher.blind_index(card, "id_card"))
    if member is None or not _matches(ctx, member, name, phone):
        raise await _wrong_try(ctx, channel, openid, count)
    # Identity proven: what follows is not guessing, so the tries start afresh.
    await ctx.redis.delete(_fail_key(channel, openid))
    if member["state"] != "active":
        label = MEMBER_STATES.get(member["state"], member["state"])
        raise DomainError("member_inactive",
                          f"您的党员档案状态为“{label}”，不能绑定。如有疑问请联系所在党支部。")
    if member.get(field) == openid:
        return member
    if member.get(field):
        raise Conflict("member_bound_elsewhere",
                       f"您的党员档案已绑定其他微信号。如需更换，请联系支部书记解除原{CHANNEL_LABELS[channel]}绑定。")
    if await members_model.by_openid(ctx.db, field, openid) is not None:
        raise Conflict("openid_bound_elsewhere", "该微信号已绑定其他党员，不能重复绑定。")
    updated = await _link(ctx, channel, member, openid, unionid)
    actor = Actor(id=member["_id"], name=f"{member['name']}（本人·{CHANNEL_LABELS[channel]}）", ip=ip)
    await audit.record(ctx, actor, "member.bind", "member", member["_id"], member["name"],
                       member["org_ancestors"], {"channel": channel})
    return updated


async def link_same_wechat_user(ctx: AppContext, channel: str, openid: str, unionid: str,
                                ip: str) -> dict[str, Any] | None:
    """Link ``openid`` to the member already bound on the other channel with ``unionid``.

    The unionid names one WeChat user across the official account and the
    mini-program, so that member proved who they are already; returns the
    member, or None when there is no such active, not-yet-linked member.
    """
    field = openid_field(channel)
    member = await members_model.by_openid(ctx.db, "unionid", unionid)
    if member is None or member["state"] != "active" or member.get(field):
        return None
    try:
        updated = await _link(ctx, channel, member, openid, unionid)
    except Conflict:
        return None
    actor = Actor(id=member["_id"], name=f"{member['name']}（本人·{CHANNEL_LABELS[channel]}）", ip=ip)
    await audit.record(ctx, actor, "member.bind", "member", member["_id"], member["name"],
                       member["org_ancestors"], {"channel": channel, "via": "unionid"})
    return updated


async def _link(ctx: AppContext, channel: str, member: dict[str, Any], openid: str,
                unionid: str | None) -> dict[str, Any]:
    field = CHANNELS[channel]
    now = ctx.clock.now()
    changes: dict[str, Any] = {field: openid, f"{channel}_bound_at": now, "updated_at": now}
    follower = await followers_model.get(ctx.db, openid) if channel == "oa" else None
    if follower is not None:
        changes["oa_following"] = follower["following"]
    try:
        updated = await members_model.update_if(
            ctx.db, member["_id"], {field: {"$exists": False}, "state": "active"}, {"$set": changes})
    except DuplicateKeyError:
        raise Conflict("openid_bound_elsewhere", "该微信号已绑定其他党员，不能重复绑定。") from None
    if updated is None:
        # Someone was faster (another openid, or a state change): say which.
        raise Conflict("member_changed", "党员档案刚刚发生变化，请稍后重试。")
    if unionid:
        updated = await members_model.update_if(
            ctx.db, member["_id"], {"unionid": {"$exists": False}}, {"$set": {"unionid": unionid}}
        ) or updated
    if follower is not None:
        await followers_model.forget(ctx.db, openid)
    await _identities_changed(ctx)
    return updated


async def unbind(ctx: AppContext, actor: Actor, member_id: str | ObjectId, channel: str) -> dict[str, Any]:
    """The secretary (permission ``member.unbind``) removes a member's binding."""
    field = openid_field(channel)
    member = await members.get_visible(ctx, actor, member_id)
    actor.require("member.unbind", member["org_ancestors"])
    openid = member.get(field)
    if not openid:
        raise DomainError("not_bound", f"该党员未绑定{CHANNEL_LABELS[channel]}")
    now = ctx.clock.now()
    unset = {field: "", f"{channel}_bound_at": ""}
    if channel == "oa":
        unset.update({"oa_following": "", "oa_followed_at": "", "oa_unfollowed_at": ""})
    updated = await members_model.update_if(ctx.db, member["_id"], {field: openid},
                                            {"$unset": unset, "$set": {"updated_at": now}})
    if updated is None:
        raise Conflict("member_changed", "党员信息已被其他人修改，请刷新后重试")
    # The unionid names the WeChat account: drop it once no channel is bound.
    await members_model.update_if(
        ctx.db, member["_id"], {"oa_openid": {"$exists": False}, "mp_openid": {"$exists": False}},
        {"$unset": {"unionid": ""}})
    if channel == "mp":
        await mpsessions.revoke_member(ctx, member["_id"])
    await _identities_changed(ctx)
    if channel == "oa" and member.get("oa_following"):
        # Still a follower, no longer a bound one.
        await followers_model.followed(ctx.db, openid, member.get("oa_followed_at") or now, None)
    await audit.record(ctx, actor, "member.unbind", "member", member["_id"], member["name"],
                       member["org_ancestors"], {"channel": channel})
    return updated


# -- who is this openid, and does it follow us --------------------------------------

async def member_for(ctx: AppContext, channel: str, openid: str) -> dict[str, Any] | None:
    """The full member document bound to ``openid`` (a database read)."""
    return await members_model.by_openid(ctx.db, openid_field(channel), openid)


@dataclass
class _Identities:
    generation: bytes | None
    checked_at: float
    entries: OrderedDict[tuple[str, str], tuple[float, dict[str, Any] | None]] = field(
        default_factory=OrderedDict)


async def identity_for(ctx: AppContext, channel: str, openid: str) -> dict[str, Any] | None:
    """The member bound to ``openid`` (fields :data:`IDENTITY_FIELDS`), or None; cached."""
    cache = await _identities(ctx)
    key = (channel, openid)
    now = time.monotonic()
    hit = cache.entries.get(key) if cache else None
    if hit is not None and hit[0] > now:
        return hit[1]
    member = await member_for(ctx, channel, openid)
    slim = {k: member[k] for k in IDENTITY_FIELDS if k in member} if member else None
    if cache is not None:
        cache.entries[key] = (now + IDENTITY_TTL, slim)
        cache.entries.move_to_end(key)
        while len(cache.entries) > IDENTITY_MAX:
            cache.entries.popitem(last=False)
    return slim


@dataclass
class IdentityState:
    cache: _Identities | None = None


async def _identities(ctx: AppContext) -> _Identities | None:
    """This process's cache, emptied when another process bound or unbound someone."""
    state = ctx.state(IdentityState)
    cache = state.cache
    now = time.monotonic()
    if cache is not None and now - cache.checked_at < IDENTITY_RECHECK:
        return cache
    if cache is not None:
        cache.checked_at = now  # one request asks Redis; the others meanwhile use the cache
    try:
        generation = await ctx.redis.get(IDENTITY_GENERATION)
    except (redis.exceptions.RedisError, OSError) as exc:
        # Without Redis nobody could tell us about binds elsewhere: read the database.
        log.warning("identity cache bypassed: redis %s", exc.__class__.__name__)
        return None
    # Re-read after the await: a concurrent request may have replaced the cache already.
    cache = state.cache
    if cache is None or cache.generation != generation:
        cache = state.cache = _Identities(generation, now)
    cache.checked_at = now
    return cache


async def _identities_changed(ctx: AppContext) -> None:
    ctx.state(IdentityState).cache = None
    await ctx.redis.incr(IDENTITY_GENERATION)


async def record_follow(ctx: AppContext, openid: str, scene: str | None) -> dict[str, Any] | None:
    """A subscribe event: on the member if bound, else in ``wechat_followers``."""
    now = ctx.clock.now()
    member = await member_for(ctx, "oa", openid)
    if member is not None:
        await members_model.update_if(
            ctx.db, member["_id"], {"oa_openid": openid},
            {"$set": {"oa_following": True, "oa_followed_at": now}, "$unset": {"oa_unfollowed_at": ""}})
    else:
        await followers_model.followed(ctx.db, openid, now, scene)
    return member


async def record_unfollow(ctx: AppContext, openid: str) -> None:
    """An unsubscribe event; the binding stays (the member may follow again)."""
    now = ctx.clock.now()
    member = await member_for(ctx, "oa", openid)
    if member is not None:
        await members_model.update_if(ctx.db, member["_id"], {"oa_openid": openid},
                                      {"$set": {"oa_following": False, "oa_unfollowed_at": now}})
    else:
        await followers_model.unfollowed(ctx.db, openid, now)
