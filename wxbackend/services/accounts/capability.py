"""Accounts: administrators, their roles and scopes, member sessions, the audit log."""

from __future__ import annotations

from models import audit, users
from wxbackend.capability import Capability

CAPABILITY = Capability(name="accounts", models=(audit, users))
