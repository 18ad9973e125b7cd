"""What the audit log says, in Chinese: each capability declares the actions it writes.

An entry is stored in the code's own words (``meeting.leave_approve``,
``{"member_id": ..., "channel": "oa"}``) so that it stays exact; the page shows it
through these declarations, listed in the capability's ``capability.py``::

    ACTIONS = (
        AuditAction("member.bind", "绑定微信", {"channel": Detail("渠道", CHANNELS)}),
        AuditAction("org.move", "调整隶属关系", {"from": Detail("原上级组织", ref="org")}),
    )
    SUBJECTS = (AuditSubject("member", "党员", "/admin/members/{}", names=member_names),)
    CAPABILITY = Capability(name="orgs", audit_actions=ACTIONS, audit_subjects=SUBJECTS, ...)

``tests/test_audit_log.py`` reads every ``audit.record(...)`` call of the code
and fails on an action, a target type or a detail field nobody declared.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from wxbackend.context import AppContext
from wxbackend.services.accounts.access import Actor

# async f(ctx, viewer, keys) -> {key: name} for the keys the viewer may see named; the keys
# are ObjectIds (stored as ids or as their strings) or, for a subject named by code, strings.
NameResolver = Callable[[AppContext, Actor, list[Any]], Awaitable[dict[Any, str]]]


@dataclass(frozen=True)
class Detail:
    """How one field of an entry's details is shown."""

    label: str
    values: Mapping[str, str] = field(default_factory=dict)  # code -> label (also each item of a list)
    ref: str = ""            # the value is an id (or ids) of this AuditSubject kind, shown by name
    unit: str = ""           # after a number: 人, 字, 次
    fmt: Callable[[Any], str] | None = None  # for what a table cannot say (a size in bytes)
    hidden: bool = False     # kept for investigators, not shown (an id beside the name it names)
    quiet: tuple[Any, ...] = ()  # values not worth a line (0 moved, not a backfill): not shown

    def says_nothing(self, value: Any) -> bool:
        # By type as well: 0 == False in Python, and a count of 0 is not a "no".
        return self.hidden or any(type(value) is type(q) and value == q for q in self.quiet)


HIDDEN = Detail("", hidden=True)


@dataclass(frozen=True)
class AuditAction:
    """One action the audit log records: its label and how its details read."""

    name: str
    label: str
    details: Mapping[str, Detail] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditSubject:
    """A kind of thing entries are about (an entry's target, a detail's ``ref``)."""

    kind: str
    label: str                      # 党员, 组织, 会议
    link: str = ""                  # management-web path with ``{}`` for the id
    names: NameResolver | None = None  # one query for all ids of a page; None: never resolved
    unseen: str = "{}项不在您查看范围内的记录"  # for ids the resolver would not name to this viewer


# Details many actions write, shown the same way wherever they appear.
COMMON: dict[str, Detail] = {"reason": Detail("原因")}

# The processes that act without a person (``Actor.system_actor(name)``).
SYSTEM_ACTORS = {
    "system": "系统",
    "seed": "系统（演示数据）",
    "tests": "系统（自动测试）",
    "import-members": "系统（命令行导入党员）",
    "create-admin": "系统（命令行创建管理员）",
    "member-roster": "系统（党员名册）",
}


def system_actor_label(name: str) -> str:
    """A process's name in Chinese; a name that is Chinese already is its own label."""
    if name in SYSTEM_ACTORS:
        return SYSTEM_ACTORS[name]
    return f"系统（{name}）" if name.isascii() else name


def size_text(size: Any) -> str:
    """A file size as people read it."""
    if not isinstance(size, int):
        return str(size)
    if size < 1024:
        return f"{size} 字节"
    return f"{size / 1024:.1f} KB" if size < 1024 * 1024 else f"{size / 1024 / 1024:.1f} MB"
