"""What the accounts capability writes to the audit log, in Chinese (see :mod:`.audit_labels`)."""

from __future__ import annotations

from models.enums import ROLES
from wxbackend.services.accounts.audit_labels import AuditAction, AuditSubject, Detail

ACTIONS = (
    AuditAction("user.create", "新建管理员", {"roles": Detail("角色", ROLES)}),
    AuditAction("user.login", "登录"),
    AuditAction("user.login_failed", "登录失败", {"failures": Detail("连续失败", unit="次")}),
    AuditAction("user.locked", "账号锁定"),
    AuditAction("user.password_change", "修改密码"),
    AuditAction("user.password_reset", "重置密码", {"generated": Detail("系统生成新密码")}),
    AuditAction("user.deactivate", "停用账号"),
    AuditAction("user.reactivate", "启用账号"),
)

SUBJECTS = (AuditSubject("user", "管理员账号", "/admin/users/{}"),)
