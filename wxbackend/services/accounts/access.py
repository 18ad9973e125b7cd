"""Who may do what, where: roles scoped to an organisation subtree.

A user holds roles such as ``secretary@<branch>``. Each role grants a set of
permissions over its organisation and everything below it. Services ask the
:class:`Actor` before they read or change anything::

    actor.require("member.edit", member["org_ancestors"])   # raises Forbidden
    query = {"org_ancestors": {"$in": actor.scope("member.view")}}

``require`` raises Forbidden ``out_of_scope``, or ``read_only`` when a change is
attempted by a read-only role (auditor) that sees the organisation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bson import ObjectId

from wxbackend.errors import Forbidden

PERMISSIONS: dict[str, frozenset[str]] = {
    "city_admin": frozenset({
        "org.view", "org.edit", "org.structure", "member.view", "member.edit",
        "member.import", "member.unmask", "member.unbind", "audit.view", "admin.manage",
        "meeting.view", "meeting.manage", "notice.send", "outbox.view", "outbox.retry",
    }),
    "committee_admin": frozenset({
        "org.view", "org.edit", "org.structure", "member.view", "member.edit",
        "member.import", "member.unmask", "member.unbind", "audit.view", "admin.manage",
        "meeting.view", "meeting.manage", "notice.send", "outbox.view", "outbox.retry",
    }),
    "secretary": frozenset({
        "org.view", "org.edit", "member.view", "member.edit", "member.import",
        "member.unmask", "member.unbind", "meeting.view", "meeting.manage",
        "notice.send", "outbox.view", "outbox.retry",
    }),
    "auditor": frozenset({"org.view", "member.view", "audit.view", "meeting.view", "outbox.view"}),
}

# What only reads: refused to a read-only role, these are out of its scope; anything
# else is a change, which a read-only role is refused as such.
READS = frozenset({"org.view", "member.view", "member.unmask", "audit.view", "meeting.view",
                   "outbox.view"})
READ_ONLY_ROLES = frozenset({"auditor"})

# Who stands above whom at the *same* organisation when accounts are managed: a
# committee admin manages its committee's auditor, not a fellow committee admin.
RANKS: dict[str, int] = {"city_admin": 3, "committee_admin": 2, "secretary": 1, "auditor": 1}


@dataclass(frozen=True)
class Role:
    role: str
    org_id: ObjectId


@dataclass
class Actor:
    """The person (or system process) on whose behalf a service runs."""

    id: ObjectId | None
    name: str
    roles: list[Role] = field(default_factory=list)
    ip: str = ""
    system: bool = False

    @classmethod
    def system_actor(cls, name: str = "system") -> Actor:
        return cls(id=None, name=name, system=True)

    def scope(self, permission: str) -> list[ObjectId]:
        """Organisations whose subtrees the permission covers (may be empty)."""
        return [r.org_id for r in self.roles if permission in PERMISSIONS.get(r.role, ())]

    def can(self, permission: str, org_ancestors: Iterable[ObjectId]) -> bool:
        if self.system:
            return True
        path = set(org_ancestors)
        return any(org_id in path for org_id in self.scope(permission))

    def require(self, permission: str, org_ancestors: Iterable[ObjectId]) -> None:
        if self.can(permission, org_ancestors):
            return
        path = set(org_ancestors)
        if permission not in READS and any(r.org_id in path and r.role in READ_ONLY_ROLES
                                           for r in self.roles):
            # An auditor sees this organisation: "no access" would be wrong, and confusing.
            raise Forbidden("read_only", "审计员账号为只读，不能修改")
        raise Forbidden("out_of_scope", "无权访问该组织或党员的信息")

    def outranks(self, role: str, org_ancestors: Sequence[ObjectId]) -> bool:
        """Whether ``admin.manage`` puts the actor above ``role`` held at the organisation
        whose path is ``org_ancestors``: from an organisation strictly above it, or from
        the same one with a higher-ranked role. Nobody outranks a peer or themselves."""
        if self.system:
            return True
        path, own = set(org_ancestors), org_ancestors[-1] if org_ancestors else None
        return any(r.org_id in path and (r.org_id != own or RANKS.get(r.role, 0) > RANKS.get(role, 0))
                   for r in self.roles if "admin.manage" in PERMISSIONS.get(r.role, ()))

    def require_any(self, permission: str) -> list[ObjectId]:
        if self.system:
            raise Forbidden("system_actor", "系统账号不能进行此操作")
        scope = self.scope(permission)
        if not scope:
            raise Forbidden("permission_denied", "您的角色没有此权限")
        return scope

    @property
    def role_names(self) -> set[str]:
        return {r.role for r in self.roles}
