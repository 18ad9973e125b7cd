"""Template helpers (Tornado ``ui_methods``): labels, masking, local times."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from models import enums

SHANGHAI = ZoneInfo("Asia/Shanghai")


def local_time(handler: Any, value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """Times are stored UTC and shown in Asia/Shanghai."""
    if value is None:
        return ""
    return value.astimezone(SHANGHAI).strftime(fmt)


def org_type(handler: Any, code: str) -> str:
    return enums.ORG_TYPES.get(code, code)


def org_category(handler: Any, code: str) -> str:
    return enums.ORG_CATEGORIES.get(code, code)


def org_status(handler: Any, code: str) -> str:
    return enums.ORG_STATUSES.get(code, code)


def role_label(handler: Any, code: str) -> str:
    return enums.ROLES.get(code, code)


def labels(handler: Any, table: str) -> dict[str, str]:
    return getattr(enums, table)


def can(handler: Any, permission: str, org_ancestors: list) -> bool:
    actor = handler.current_user
    return bool(actor) and actor.can(permission, org_ancestors)
