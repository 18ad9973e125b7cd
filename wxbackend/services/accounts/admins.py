"""Management-web users: accounts, password login with lockout, sessions.

Passwords are argon2 hashes, checked in a thread so the event loop keeps
serving (``passwords``). Every login try is counted before the password is
checked and refused over the per-name or per-address limit (``lockout``).
Sessions are random ids kept (hashed) in Redis with a sliding expiry, so any
server process can read them and logout revokes at once. A session also
carries the user's *session generation*: raising ``session_gen`` on the user
(password change or reset, deactivation) ends every session opened before::

    actor, sid = await admins.login(ctx, "admin", "secret", ip="10.0.0.1")
    session = await admins.session_for(ctx, sid, ip="10.0.0.1")   # None once ended

Reason codes: ``login_failed`` (401: wrong name or password, or a deactivated
account, all alike), ``account_locked`` and ``login_rate_limited`` (429).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from models import orgs as orgs_model
from models import users as users_model
from models.enums import ROLES
from wxbackend.context import AppContext
from wxbackend.errors import Conflict, InvalidInput, Unauthorized
from wxbackend.services.accounts import audit, lockout, passwords
from wxbackend.services.accounts.access import Actor, Role
from wxbackend.services.accounts.passwords import MIN_PASSWORD, hash_password

USERNAME = re.compile(r"^[A-Za-z0-9_.-]{3,32}$")


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


async def authenticate(ctx: AppContext, username: str, password: str, ip: str) -> Actor:
    """The actor for a right password; Unauthorized or TooManyRequests otherwise."""
    _, actor = await _check_login(ctx, username, password, ip)
    return actor


async def login(ctx: AppContext, username: str, password: str, ip: str) -> tuple[Actor, str]:
    """Authenticate and open a session bound to the generation the password was checked at."""
    user, actor = await _check_login(ctx, username, password, ip)
    return actor, await open_user_session(ctx, user)


async def _check_login(ctx: AppContext, username: str, password: str,
                       ip: str) -> tuple[dict[str, Any], Actor]:
    # Counted first: parallel tries cannot overtake the limit, and over it even
    # the right password is refused. Unknown names take the same path.
    attempt = await lockout.take_try(ctx, username, ip)
    user = await users_model.by_username(ctx.db, username)
    ok = await passwords.verify(ctx, user["password_hash"] if user else None, password)
    if not ok or not user or not user.get("active", True):
        await _record_failure(ctx, user, username, ip, attempt)
        raise Unauthorized("login_failed", "用户名或密码错误")
    await lockout.succeeded(ctx, attempt)
    await users_model.update(ctx.db, user["_id"], {"$set": {"last_login_at": ctx.clock.now()}})
    actor = actor_from_user(user, ip)
    await audit.record(ctx, actor, "user.login", "user", user["_id"], username, await home_path(ctx, user))
    return user, actor


async def _record_failure(ctx: AppContext, user: dict[str, Any] | None, username: str, ip: str,
                          attempt: lockout.Try) -> None:
    if user is None:
        return
    who = Actor(id=None, name=username, ip=ip)
    path = await home_path(ctx, user)
    await audit.record(ctx, who, "user.login_failed", "user", user["_id"], username, path,
                       {"failures": attempt.count})
    if attempt.used_up:
        await audit.record(ctx, who, "user.locked", "user", user["_id"], username, path)


async def home_path(ctx: AppContext, user: dict[str, Any]) -> list[ObjectId]:
    """Events about a user are filed under the user's first role's organisation."""
    roles = user.get("roles") or []
    org = await orgs_model.get(ctx.db, roles[0]["org_id"]) if roles else None
    return org["org_ancestors"] if org else []


# -- sessions ------------------------------------------------------------------

@dataclass(frozen=True)
class AdminSession:
    actor: Actor
    # A reset password is one-time: the holder must choose their own first.
    must_change_password: bool


def _session_key(sid: str) -> str:
    return "session:" + hashlib.sha256(sid.encode()).hexdigest()


async def open_user_session(ctx: AppContext, user: dict[str, Any]) -> str:
    """A new session of ``user`` as read: valid until its session generation moves."""
    sid = secrets.token_urlsafe(32)
    value = f"{user['_id']}:{user.get('session_gen', 0)}"
    await ctx.redis.set(_session_key(sid), value.encode(), ex=ctx.settings.security.session_ttl_seconds)
    return sid


async def open_session(ctx: AppContext, actor: Actor) -> str:
    user = await users_model.get(ctx.db, actor.id) if actor.id else None
    if user is None or not user.get("active", True):
        raise Unauthorized("login_failed", "用户名或密码错误")
    return await open_user_session(ctx, user)


async def session_for(ctx: AppContext, sid: str, ip: str) -> AdminSession | None:
    """The live session ``sid``; None (and the session dropped) once it has ended."""
    key = _session_key(sid)
    # GETEX reads and slides the expiry in one round trip.
    raw = await ctx.redis.getex(key, ex=ctx.settings.security.session_ttl_seconds)
    if raw is None:
        return None
    # Sessions from before generations existed carry no ":gen": generation 0.
    user_id, _, generation = raw.decode().partition(":")
    user = await users_model.get(ctx.db, ObjectId(user_id))
    if (user is None or not user.get("active", True)
            or int(generation or 0) != user.get("session_gen", 0)):
        await ctx.redis.delete(key)
        return None
    return AdminSession(actor_from_user(user, ip), bool(user.get("must_change_password")))


async def actor_for_session(ctx: AppContext, sid: str, ip: str) -> Actor | None:
    session = await session_for(ctx, sid, ip)
    return session.actor if session else None


async def close_session(ctx: AppContext, sid: str) -> None:
    await ctx.redis.delete(_session_key(sid))
