"""Managing admin accounts: one's own password, and what a higher admin may do
to the accounts below them (reset the password, deactivate, reactivate).

"Higher" is :meth:`Actor.outranks` over *every* role the user holds: a committee
admin manages the secretaries and auditors of its subtree, never a fellow
committee admin, the city admin or itself (one changes one's own password with
the current one, never through a reset). Each change raises the user's session
generation, which ends every session opened before it at the next request
(``admins.session_for``), and is audited without the password::

    sid = await admin_users.change_own_password(ctx, actor, current, new, confirm)  # a fresh session
    one_time = await admin_users.reset_password(ctx, city_admin, user_id)           # shown once
    await admin_users.set_active(ctx, city_admin, user_id, active=False)

Reason codes: ``wrong_current_password`` (400; the try counts towards the
login lockout, so a stolen session cannot guess the password),
``password_mismatch``, ``same_password`` and those of ``passwords.check_new``
(400), ``account_locked``/``login_rate_limited`` (429), ``user_not_found`` (404),
``out_of_scope`` (403), ``already_active``/``already_inactive``/``changed_meanwhile`` (409).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import ObjectId

from models import orgs as orgs_model
from models import users as users_model
from wxbackend.context import AppContext
from wxbackend.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized, object_id
from wxbackend.services.accounts import admins, audit, lockout, passwords
from wxbackend.services.accounts.access import Actor

OUT_OF_SCOPE = "只能管理本级以下组织的管理员账号，不能管理同级、上级或自己的账号"


@dataclass(frozen=True)
class RoleView:
    role: str
    org_id: ObjectId
    org_name: str


@dataclass(frozen=True)
class UserView:
    """What the account pages show of a user (never the hash)."""

    id: ObjectId
    username: str
    display_name: str
    active: bool
    must_change_password: bool
    last_login_at: datetime | None
    roles: list[RoleView]
    manageable: bool


def parse_id(raw: str | ObjectId) -> ObjectId:
    return object_id(raw, "user_not_found", "找不到该管理员")


async def _role_paths(ctx: AppContext, user: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None]]:
    return [(r["role"], await orgs_model.get(ctx.db, r["org_id"])) for r in user.get("roles", [])]


def _may_manage(actor: Actor, user: dict[str, Any], places: list[tuple[str, dict[str, Any] | None]]) -> bool:
    # A role at a vanished organisation has no path to be above: only the system may act.
    return (user["_id"] != actor.id and bool(places)
            and all(org is not None and actor.outranks(role, org["org_ancestors"]) for role, org in places))


def _present(actor: Actor, user: dict[str, Any], places: list[tuple[str, dict[str, Any] | None]]) -> UserView:
    roles = [RoleView(role, r["org_id"], org["name"] if org else "（已不存在）")
             for (role, org), r in zip(places, user.get("roles", []), strict=True)]
    return UserView(user["_id"], user["username"], user.get("display_name") or user["username"],
                    user.get("active", True), bool(user.get("must_change_password")),
                    user.get("last_login_at"), roles, _may_manage(actor, user, places))


async def _managed(ctx: AppContext, actor: Actor, user_id: str | ObjectId) -> dict[str, Any]:
    """The user ``actor`` stands above, or NotFound/Forbidden."""
    user, places = await _load(ctx, user_id)
    if not _may_manage(actor, user, places):
        raise Forbidden("out_of_scope", OUT_OF_SCOPE)
    return user


async def _load(ctx: AppContext, user_id: str | ObjectId) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    user = await users_model.get(ctx.db, parse_id(user_id))
    if user is None:
        raise NotFound("user_not_found", "找不到该管理员")
    return user, await _role_paths(ctx, user)


async def view(ctx: AppContext, actor: Actor, user_id: str | ObjectId) -> UserView:
    user, places = await _load(ctx, user_id)
    if not _may_manage(actor, user, places):
        raise Forbidden("out_of_scope", OUT_OF_SCOPE)
    return _present(actor, user, places)


async def at_org(ctx: AppContext, actor: Actor, org: dict[str, Any]) -> list[UserView]:
    """The admins holding a role at ``org`` itself, for an actor who manages accounts there."""
    actor.require("admin.manage", org["org_ancestors"])
    users = await users_model.at_org(ctx.db, org["_id"])
    return [_present(actor, u, await _role_paths(ctx, u)) for u in users]


async def change_own_password(ctx: AppContext, actor: Actor, current: str, new: str, confirm: str) -> str:
    """Change the actor's own password; ends their other sessions, returns a fresh one."""
    user = await users_model.get(ctx.db, actor.id) if actor.id else None
    if user is None or not user.get("active", True):
        raise Unauthorized("session_ended", "登录已失效，请重新登录")
    if new != confirm:
        raise InvalidInput("password_mismatch", "两次输入的新密码不一致")
    passwords.check_new(new, user["username"])
    if new == current:
        raise InvalidInput("same_password", "新密码不能与当前密码相同")
    await _check_current(ctx, actor, user, current)
    updated = await _set_password(ctx, user, new, must_change=False)
    await audit.record(ctx, actor, "user.password_change", "user", user["_id"], user["username"],
                       await admins.home_path(ctx, user))
    return await admins.open_user_session(ctx, updated)


async def _check_current(ctx: AppContext, actor: Actor, user: dict[str, Any], current: str) -> None:
    # Guessing the current password here costs the same tries as at the login page.
    attempt = await lockout.take_try(ctx, user["username"], actor.ip)
    if not await passwords.verify(ctx, user["password_hash"], current):
        if attempt.used_up:
            await audit.record(ctx, actor, "user.locked", "user", user["_id"], user["username"],
                               await admins.home_path(ctx, user))
        raise InvalidInput("wrong_current_password", "当前密码不正确")
    await lockout.succeeded(ctx, attempt)


async def reset_password(ctx: AppContext, actor: Actor, user_id: str | ObjectId, chosen: str = "") -> str:
    """Give a user below the actor a new password (``chosen``, else a random one) and
    return it to be shown once; the user must choose their own at the next login."""
    user = await _managed(ctx, actor, user_id)
    if chosen:
        passwords.check_new(chosen, user["username"])
    password = chosen or passwords.generate()
    await _set_password(ctx, user, password, must_change=True)
    # The reset is the way back into a locked account.
    await lockout.clear(ctx, user["username"])
    await audit.record(ctx, actor, "user.password_reset", "user", user["_id"], user["username"],
                       await admins.home_path(ctx, user), {"generated": not chosen})
    return password


async def _set_password(ctx: AppContext, user: dict[str, Any], password: str, *, must_change: bool) -> dict[str, Any]:
    now = ctx.clock.now()
    changes = {"$set": {"password_hash": await passwords.hash_password(ctx, password),
                        "must_change_password": must_change, "password_changed_at": now, "updated_at": now},
               "$inc": {"session_gen": 1}}
    # Against the hash we read: of two racing changes, the second changes nothing.
    updated = await users_model.update_if(ctx.db, user["_id"], {"password_hash": user["password_hash"]}, changes)
    if updated is None:
        raise Conflict("changed_meanwhile", "该账号刚被他人修改，请刷新后重试")
    return updated


async def set_active(ctx: AppContext, actor: Actor, user_id: str | ObjectId, *, active: bool) -> dict[str, Any]:
    """Deactivate (ending every session at once) or reactivate a user below the actor."""
    user = await _managed(ctx, actor, user_id)
    changes = {"$set": {"active": active, "updated_at": ctx.clock.now()}, "$inc": {"session_gen": 1}}
    updated = await users_model.update_if(ctx.db, user["_id"], {"active": not active}, changes)
    if updated is None:
        code, message = ("already_active", "该账号已是启用状态") if active else ("already_inactive", "该账号已停用")
        raise Conflict(code, message)
    await audit.record(ctx, actor, "user.reactivate" if active else "user.deactivate", "user", user["_id"],
                       user["username"], await admins.home_path(ctx, user))
    return updated
