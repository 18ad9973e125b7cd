"""The capabilities this deployment runs, in dependency order (lowest first).

The one list the server, the worker, the CLI and the tests build their registry
from; a new capability adds its ``CAPABILITY`` here (and its line to the import
contract in setup.cfg, and its routes to ``handlers/routes.py``)::

    registry = installed.registry(settings)
    ctx = await AppContext.connect(settings, mongodb_uri, redis_url, registry=registry)
"""

from __future__ import annotations

from wxbackend import jobs
from wxbackend.capability import Capability, Registry
from wxbackend.services.accounts.capability import CAPABILITY as ACCOUNTS
from wxbackend.services.meetings.capability import CAPABILITY as MEETINGS
from wxbackend.services.notify.capability import CAPABILITY as NOTIFY
from wxbackend.services.orgs.capability import CAPABILITY as ORGS
from wxbackend.settings import Settings
from wxbackend.wechat.capability import CAPABILITY as WECHAT

INSTALLED: tuple[Capability, ...] = (jobs.PLATFORM, WECHAT, ACCOUNTS, ORGS, NOTIFY, MEETINGS)


def registry(settings: Settings, *extra: Capability) -> Registry:
    """The registry of the installed capabilities (and ``extra`` ones: tests add theirs)."""
    return Registry((*INSTALLED, *extra), settings)
