"""Management-web users: accounts, password login with lockout, sessions.

Passwords are argon2 hashes, checked in a thread so the event loop keeps
serving. Sessions are random ids kept (hashed) in Redis with a sliding
expiry, so any server process can read them and logout revokes at once::

    actor = await admins.authenticate(ctx, "admin", "secret", ip="10.0.0.1")
    sid = await admins.open_session(ctx, actor)
    actor = await admins.actor_for_session(ctx, sid, ip="10.0.0.1")
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
import secrets
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from models import orgs as orgs_model
from models import users as users_model
from models.enums import ROLES
from wxbackend.context import AppContext
from wxbackend.errors import Conflict, InvalidInput, TooManyRequests, Unauthorized
from wxbackend.services.accounts import audit
from wxbackend.services.accounts.access import Actor, Role

USERNAME = re.compile(r"^[A-Za-z0-9_.-]{3,32}$")
MIN_PASSWORD = 10


@functools.cache
def _hasher(time_cost: int, memory_kib: int, parallelism: int) -> tuple[PasswordHasher, str]:
    """The hasher for the configured cost, with a hash of a random password that
    an unknown username is verified against, so that it takes as long as a wrong
    password. Existing hashes carry their own parameters and keep verifying."""
    hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)
    return hasher, hasher.hash(secrets.token_hex(16))


def _hasher_for(ctx: AppContext) -> tuple[PasswordHasher, str]:
    security = ctx.settings.security
    return _hasher(security.password_time_cost, security.password_memory_kib,
                   security.password_parallelism)


async def hash_password(ctx: AppContext, password: str) -> str:
    hasher, _ = _hasher_for(ctx)
    return await asyncio.get_running_loop().run_in_executor(None, hasher.hash, password)


async def _verify(ctx: AppContext, hashed: str | None, password: str) -> bool:
    hasher, dummy = _hasher_for(ctx)

    def check() -> bool:
        try:
            return hasher.verify(hashed or dummy, password) and hashed is not None
        except (VerificationError, InvalidHashError):
            return False
    return await asyncio.get_running_loop().run_in_executor(None, check)


def actor_from_user(user: dict[str, Any], ip: str = "") -> Actor:
    roles = [Role(r["role"], r["org_id"]) for r in user.get("roles", [])]
    return Actor(id=user["_id"], name=user.get("display_name") or user["username"], roles=roles, ip=ip)


async def create_user(ctx: AppContext, actor: Actor, *, username: str, password: str,
                      display_name: str, roles: list[tuple[str, ObjectId]]) -> dict[str, Any]:
    if not USERNAME.match(username or ""):
        raise InvalidInput("bad_username", "用户名为3-32位字母、数字、下划线、点或连字符")
    if len(password or "") < MIN_PASSWORD:
        raise InvalidInput("weak_password", f"密码至少{MIN_PASSWORD}位")
    if not roles:
        raise InvalidInput("no_role", "至少指定一个角色")
    org_paths = []
    for role, org_id in roles:
        if role not in ROLES:
            raise InvalidInput("bad_role", "角色无效")
        org = await orgs_model.get(ctx.db, org_id)
        if org is None:
            raise InvalidInput("bad_role_org", "角色所属组织不存在")
        actor.require("admin.manage", org["org_ancestors"])
        if role == "city_admin" and org["parent_id"] is not None:
            raise InvalidInput("bad_role_org", "市级管理员只能设在顶级党委")
        org_paths.append(org["org_ancestors"])
    now = ctx.clock.now()
    doc = {"_id": ObjectId(), "username": username, "display_name": display_name.strip() or username,
           "password_hash": await hash_password(ctx, password),
           "roles": [{"role": r, "org_id": o} for r, o in roles],
           "active": True, "created_at": now, "updated_at": now}
    try:
        await users_model.insert(ctx.db, doc)
    except DuplicateKeyError:
        raise Conflict("username_taken", "用户名已存在") from None
    await audit.record(ctx, actor, "user.create", "user", doc["_id"], username, org_paths[0],
                       {"roles": [r for r, _ in roles]})
    return doc


def _fail_key(username: str) -> str:
    return f"login:failures:{username.lower()}"


def _lock_key(username: str) -> str:
    return f"login:locked:{username.lower()}"


async def authenticate(ctx: AppContext, username: str, password: str, ip: str) -> Actor:
    """The actor for a right password; Unauthorized or TooManyRequests otherwise."""
    locked_for = await ctx.redis.ttl(_lock_key(username))
    if locked_for and locked_for > 0:
        raise TooManyRequests("account_locked", f"登录失败次数过多，账号已锁定，请{(locked_for + 59) // 60}分钟后再试",
                              retry_after=locked_for)
    user = await users_model.by_username(ctx.db, username)
    ok = await _verify(ctx, user["password_hash"] if user else None, password)
    if not ok or not user or not user.get("active", True):
        await _count_failure(ctx, user, username, ip)
        raise Unauthorized("login_failed", "用户名或密码错误")
    await ctx.redis.delete(_fail_key(username))
    await users_model.update(ctx.db, user["_id"], {"$set": {"last_login_at": ctx.clock.now()}})
    actor = actor_from_user(user, ip)
    await audit.record(ctx, actor, "user.login", "user", user["_id"], username, await _home_path(ctx, user))
    return actor


async def _count_failure(ctx: AppContext, user: dict[str, Any] | None, username: str, ip: str) -> None:
    security = ctx.settings.security
    key = _fail_key(username)
    failures = await ctx.redis.incr(key)
    await ctx.redis.expire(key, security.login_lockout_seconds)
    if user is None:
        return
    who = Actor(id=None, name=username, ip=ip)
    await audit.record(ctx, who, "user.login_failed", "user", user["_id"], username, await _home_path(ctx, user),
                       {"failures": failures})
    if failures >= security.login_max_failures:
        await ctx.redis.set(_lock_key(username), b"1", ex=security.login_lockout_seconds)
        await ctx.redis.delete(key)
        await audit.record(ctx, who, "user.locked", "user", user["_id"], username, await _home_path(ctx, user))


async def _home_path(ctx: AppContext, user: dict[str, Any]) -> list[ObjectId]:
    """Login events are filed under the user's first role's organisation."""
    roles = user.get("roles") or []
    org = await orgs_model.get(ctx.db, roles[0]["org_id"]) if roles else None
    return org["org_ancestors"] if org else []


def _session_key(sid: str) -> str:
    return "session:" + hashlib.sha256(sid.encode()).hexdigest()


async def open_session(ctx: AppContext, actor: Actor) -> str:
    sid = secrets.token_urlsafe(32)
    await ctx.redis.set(_session_key(sid), str(actor.id).encode(),
                        ex=ctx.settings.security.session_ttl_seconds)
    return sid


async def actor_for_session(ctx: AppContext, sid: str, ip: str) -> Actor | None:
    key = _session_key(sid)
    # GETEX reads and slides the expiry in one round trip.
    user_id = await ctx.redis.getex(key, ex=ctx.settings.security.session_ttl_seconds)
    if user_id is None:
        return None
    user = await users_model.get(ctx.db, ObjectId(user_id.decode()))
    if user is None or not user.get("active", True):
        await ctx.redis.delete(key)
        return None
    return actor_from_user(user, ip)


async def close_session(ctx: AppContext, sid: str) -> None:
    await ctx.redis.delete(_session_key(sid))
