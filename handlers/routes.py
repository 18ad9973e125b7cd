"""The HTTP routes of the platform and of each capability, in the order Tornado tries them.

A capability's handlers live in modules named after it (``admin_meetings``,
``api/meetings``); this table says which modules serve which capability, so the
application serves exactly the installed ones::

    table = routes.table(capability.name for capability in ctx.registry.capabilities)
"""

from __future__ import annotations

from collections.abc import Iterable

from handlers import (
    admin,
    admin_accounts,
    admin_binding,
    admin_compliance,
    admin_import,
    admin_meetings,
    admin_notify,
    health,
    wechat_oa,
)
from handlers.api import auth, me, meeting_social, meetings, notifications, openapi

# The official-account callback, by far the busiest route, comes first.
PLATFORM = (wechat_oa.ROUTES, health.ROUTES, openapi.ROUTES)

ROUTES_OF = {
    # Login, home and audit pages sit in handlers/admin.py with the organisation pages.
    "orgs": (admin.ROUTES, admin_accounts.ROUTES, admin_import.ROUTES, admin_binding.ROUTES, auth.ROUTES, me.ROUTES),
    "meetings": (meeting_social.ROUTES, admin_compliance.ROUTES, meetings.ROUTES, admin_meetings.ROUTES),
    "notify": (admin_notify.ROUTES, notifications.ROUTES),
}


def table(capabilities: Iterable[str]) -> list[tuple]:
    """Route entries ``(pattern, handler[, kwargs])`` of the platform and these capabilities."""
    groups = [*PLATFORM]
    for name in capabilities:
        groups.extend(ROUTES_OF.get(name, ()))
    return [entry for group in groups for entry in group]
