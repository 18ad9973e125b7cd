"""Template helpers: labels, masking, local times.

Handlers put them in the template namespace when they render
(``BaseHandler.get_template_namespace``), bound to the handler as Tornado's
``ui_methods`` would be; unlike ``ui_methods``, a request that renders no
template (the callback, the API) does not pay for binding them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any

from models import enums
from wxbackend.clock import SHANGHAI


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


HELPERS: dict[str, Callable[..., Any]] = {
    "local_time": local_time, "org_type": org_type, "org_category": org_category,
    "org_status": org_status, "role_label": role_label, "labels": labels, "can": can,
}


def helpers_for(handler: Any) -> dict[str, Callable[..., Any]]:
    """The helpers with ``handler`` bound as their first argument."""
    return {name: functools.partial(fn, handler) for name, fn in HELPERS.items()}
