"""Accounts: administrators, their roles and scopes, member sessions, the audit log."""

from __future__ import annotations

from models import audit, users
from wxbackend.capability import Capability
from wxbackend.services.accounts import audit_actions

CAPABILITY = Capability(name="accounts", models=(audit, users),
                        audit_actions=audit_actions.ACTIONS, audit_subjects=audit_actions.SUBJECTS)
