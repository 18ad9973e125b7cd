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
- A right identity that cannot bind (the member is bound to another WeChat
  account on this channel, or no longer ``active``) gets exactly the answer of
  a wrong one and costs a try too: otherwise the answer would confirm a guessed
  ID-card number. When the member is bound elsewhere, their secretaries are
  told (a member who changed phones needs the old binding removed; anybody
  else has the member's data).
- Tries are limited per openid, per address, per name and city-wide
  (:mod:`.bind_limits`), counted *before* checking so that parallel guesses
  cannot exceed a limit. When a name's limit locks, the secretaries of the
  members of that name are told. Malformed input (a number that is not an
  ID-card number) is refused without costing a try: it reveals nothing.
- A WeChat account already bound answers about its own member only (no try,
  no lookup of the form's number), so it cannot probe other records either.
- One openid per member and one member per openid: conditional updates (set
  only where the field is absent) plus the unique sparse indexes.
- Binding and unbinding are audited (never with the ID-card number).

The secretaries are told by the notifications capability, which lies above
this one: binding queues the job ``binding_alert`` by name (declared in
:mod:`wxbackend.services.notify.binding_notices`), with member ids only.

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
import unicodedata
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
from wxbackend import jobs
from wxbackend.clock import SHANGHAI
from wxbackend.context import AppContext
from wxbackend.errors import Conflict, DomainError, InvalidInput
from wxbackend.idcard import parse_id_card
from wxbackend.services.accounts import audit, mpsessions
from wxbackend.services.accounts.access import Actor
from wxbackend.services.orgs import bind_limits, members, orgtree

log = logging.getLogger(__name__)

CHANNELS = {"oa": "oa_openid", "mp": "mp_openid"}
CHANNEL_LABELS = {"oa": "公众号", "mp": "小程序"}
PHONE = re.compile(r"^1[3-9]\d{9}$")
# The separators of names written in two parts (阿依古丽·买买提) as people type them.
NAME_DOTS = str.maketrans({c: "·" for c in "•・∙⋅‧."})
IDENTITY_GENERATION = "wx:bind:generation"
# How long a process trusts its identity cache without asking Redis, how long an
# entry lives at most, and how many entries a process keeps (seconds, seconds, count).
IDENTITY_RECHECK = 1.0
IDENTITY_TTL = 60.0
IDENTITY_MAX = 50_000
# What chat replies need of a member; the cache holds no personal data.
IDENTITY_FIELDS = ("_id", "name", "state", "party_status", "org_id", "org_ancestors",
                   "oa_openid", "mp_openid")
# The job of the notifications capability that tells secretaries (queued by name: that
# capability lies above this one), and how many members of one name it tells about.
ALERT_JOB = "binding_alert"
NAMESAKES_MAX = 10


def openid_field(channel: str) -> str:
    if channel not in CHANNELS:
        raise InvalidInput("bad_channel", "绑定渠道应为公众号或小程序")
    return CHANNELS[channel]


def _check_openid(openid: str) -> str:
    if not openid or len(openid) > 128 or not openid.isascii():
        raise InvalidInput("bad_openid", "微信身份无效，请从公众号或小程序重新进入")
    return openid


def clean_name(raw: str) -> str:
    """A name as compared and counted: width-folded, without spaces, one kind of middle dot."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", raw or "")).translate(NAME_DOTS)


def _clean_form(name: str, id_card: str, phone: str, today: date) -> tuple[str, str, str]:
    """Normalise the form; malformed input is refused without costing a try."""
    name = clean_name(name)
    if not name or len(name) > 30:
        raise InvalidInput("bind_name", "请填写姓名")
    # Invisible characters would make one name many for the per-name limit.
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise InvalidInput("bind_name", "姓名中含有无法识别的字符")
    card = parse_id_card(id_card or "", today=today).number
    phone = re.sub(r"[\s-]", "", phone or "")
    if phone and not PHONE.match(phone):
        raise InvalidInput("bind_phone", "手机号码应为11位，以1开头")
    return name, card, phone


def _matches(ctx: AppContext, member: dict[str, Any], name: str, phone: str) -> bool:
    if clean_name(member.get("name") or "") != name:
        return False
    if member.get("phone_bidx"):
        return bool(phone) and ctx.cipher.blind_index(phone, "phone") == member["phone_bidx"]
    return True


def _inactive(member: dict[str, Any]) -> DomainError:
    label = MEMBER_STATES.get(member["state"], member["state"])
    return DomainError("member_inactive",
                       f"您的党员档案状态为“{label}”，不能绑定。如有疑问请联系所在党支部。")


# -- bind / unbind ---------------------------------------------------------------

async def bind(ctx: AppContext, channel: str, openid: str, unionid: str | None, name: str,
               id_card: str, phone: str, ip: str) -> dict[str, Any]:
    """Link ``openid`` to the member the form identifies; returns the member."""
    field = openid_field(channel)
    openid = _check_openid(openid)
    name, card, phone = _clean_form(name, id_card, phone, ctx.clock.today())
    card_bidx = ctx.cipher.blind_index(card, "id_card")
    own = await members_model.by_openid(ctx.db, field, openid)
    if own is not None:
        # Compared with its own member only: this answer cannot confirm anybody's number.
        if own["id_card_bidx"] != card_bidx or not _matches(ctx, own, name, phone):
            raise Conflict("openid_bound_elsewhere", "该微信号已绑定其他党员，不能重复绑定。")
        if own["state"] != "active":
            raise _inactive(own)
        return own
    attempt = await bind_limits.take(ctx, bind_limits.limits_for(ctx, channel, openid, ip, name))
    member = await members_model.by_id_card(ctx.db, card_bidx)
    proven = member is not None and _matches(ctx, member, name, phone)
    if proven and member["state"] == "active" and not member.get(field):
        try:
            updated = await _link(ctx, channel, member, openid, unionid)
        except Conflict as exc:
            if exc.code != "member_changed":  # this account was bound meanwhile: its own affair
                await bind_limits.succeeded(ctx, attempt)
                raise
            # Someone was faster: a double tap of this account is its success, anything
            # else (another account, a state change) answers as a wrong try does.
            member = await members_model.get(ctx.db, member["_id"]) or member
            if member.get(field) == openid:
                await bind_limits.succeeded(ctx, attempt)
                return member
        else:
            await bind_limits.succeeded(ctx, attempt)
            actor = Actor(id=member["_id"], name=f"{member['name']}（本人·{CHANNEL_LABELS[channel]}）", ip=ip)
            await audit.record(ctx, actor, "member.bind", "member", member["_id"], member["name"],
                               member["org_ancestors"], {"channel": channel})
            return updated
    raise await _wrong_try(ctx, channel, attempt, name, member if proven else None)


async def _wrong_try(ctx: AppContext, channel: str, attempt: bind_limits.Attempt, name: str,
                     proven: dict[str, Any] | None) -> DomainError:
    """Count the failure; tell the secretaries what needs them; the answer to give."""
    error, locked = await bind_limits.failed(ctx, attempt)
    now = ctx.clock.now()
    if proven is not None and proven["state"] == "active" and proven.get(CHANNELS[channel]):
        # At most one notice a member a day (the job id here, the notice's subject there).
        day = now.astimezone(SHANGHAI).date().isoformat()
        await _alert(ctx, "bound_elsewhere", channel, [proven["_id"]], now,
                     f"{ALERT_JOB}:bound_elsewhere:{channel}:{proven['_id']}:{day}")
    for limit in locked:
        log.warning("binding locked", extra={"fields": {"limit": limit.kind, "channel": channel,
                                                        "seconds": limit.seconds}})
        if limit.kind == "name":
            # Looked up and queued for any name, on record or not: the lock takes as long.
            await _alert(ctx, "locked", channel, await _namesakes(ctx, name), now, None)
    return error


async def _namesakes(ctx: AppContext, name: str) -> list[ObjectId]:
    """Active members called ``name`` anywhere in the city (at most NAMESAKES_MAX)."""
    roots = (await orgtree.snapshot(ctx)).children.get(None, [])
    if not roots:
        return []
    rows = await members_model.search_name(ctx.db, roots, name, NAMESAKES_MAX * 2)
    return [r["_id"] for r in rows
            if r["state"] == "active" and clean_name(r["name"]) == name][:NAMESAKES_MAX]


async def _alert(ctx: AppContext, event: str, channel: str, member_ids: list[ObjectId],
                 at: Any, job_id: str | None) -> None:
    """Queue the secretaries' notice; a refusal never fails because of it."""
    if ALERT_JOB not in ctx.registry.jobs:
        log.warning("binding alert %s not sent: no installed capability declares %s", event, ALERT_JOB)
        return
    try:
        await jobs.enqueue(ctx, ALERT_JOB, event, channel, [str(i) for i in member_ids],
                           int(at.timestamp()), _job_id=job_id)
    except (redis.exceptions.RedisError, OSError) as exc:
        log.warning("binding alert %s not queued: redis %s", event, exc.__class__.__name__)


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
