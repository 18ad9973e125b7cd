"""What a capability adds to the platform, declared in one place, and the registry built from them.

A capability (organisations, notifications, meetings, dues ...) is a package under
``wxbackend/services/`` whose ``capability.py`` declares everything it plugs in::

    CAPABILITY = Capability(
        name="meetings",
        models=(models.meetings, models.comments),          # collections and their indexes
        jobs=(planning.remind_and_start,),                   # @jobs.job / @jobs.cron_job / @jobs.pruner
        chat=(ChatRoute.keyword("会议", chat.on_meetings),   # keywords, menu keys, events, QR scenes
              ChatRoute.scene_prefix("checkin:", chat.on_checkin_scan)),
        kinds=meeting_notices.kinds,                         # notification kinds (or f(settings) -> kinds)
        subtree_moved=(compliance.subtree_moved,),           # hooks of the organisation tree
        audit_actions=audit_actions.ACTIONS,                 # what its audit entries say, in Chinese
        audit_subjects=audit_actions.SUBJECTS,               # what they are about, named per page
    )

The server, the worker, the CLI and the tests build one :class:`Registry` from the
list of installed capabilities (``wxbackend/services/installed.py``) and hand it to
the context (``ctx.registry``); nothing registers itself by being imported. HTTP
routes are the handlers' business: ``handlers/routes.py`` lists them per capability;
the chat router is built from ``registry.chat`` by ``wechat.router.router_of``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

ChatHandler = Callable[[Any, Any], Awaitable[Any]]
Hook = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class ChatRoute:
    """Who answers what on the official account: one entry of the chat router's table."""

    table: str  # keyword, menu_key, event, message_type, scene_prefix, fallback_text, fallback_menu
    key: str
    handler: ChatHandler
    help: str = ""  # a keyword's line in the help text: "查看所在党支部和您的党员状态"

    @classmethod
    def keyword(cls, word: str, handler: ChatHandler, help: str = "") -> ChatRoute:
        return cls("keyword", word, handler, help)

    @classmethod
    def menu_key(cls, key: str, handler: ChatHandler) -> ChatRoute:
        return cls("menu_key", key, handler)

    @classmethod
    def event(cls, name: str, handler: ChatHandler) -> ChatRoute:
        return cls("event", name, handler)

    @classmethod
    def message_type(cls, name: str, handler: ChatHandler) -> ChatRoute:
        return cls("message_type", name, handler)

    @classmethod
    def scene_prefix(cls, prefix: str, handler: ChatHandler) -> ChatRoute:
        return cls("scene_prefix", prefix, handler)

    @classmethod
    def fallback_text(cls, handler: ChatHandler) -> ChatRoute:
        return cls("fallback_text", "", handler)

    @classmethod
    def fallback_menu(cls, handler: ChatHandler) -> ChatRoute:
        return cls("fallback_menu", "", handler)


@dataclass(frozen=True)
class Capability:
    """Everything one capability contributes; see the module docstring."""

    name: str
    models: tuple[ModuleType, ...] = ()
    jobs: tuple[Callable[..., Awaitable[Any]], ...] = ()
    chat: tuple[ChatRoute, ...] = ()
    # Notification kinds (objects with a ``name``), or a function of the settings giving them.
    kinds: tuple[Any, ...] | Callable[[Any], Iterable[Any]] = ()
    # name -> async f(ctx, user, orgs, since) -> digest items, for the secretaries' daily digest.
    digest_sources: dict[str, Hook] = field(default_factory=dict)
    # async f(ctx, member, before, limit) -> timeline entries of a member.
    timeline_sources: tuple[Hook, ...] = ()
    # async f(ctx, subtree_org_ids, old_prefix, new_prefix) after an organisation moved.
    subtree_moved: tuple[Hook, ...] = ()
    # The audit actions it writes (objects with a ``name``: accounts.audit_labels.AuditAction);
    # an action written without one is caught by tests/test_audit_log.py.
    audit_actions: tuple[Any, ...] = ()
    # What its audit entries are about (objects with a ``kind``: accounts.audit_labels.AuditSubject).
    audit_subjects: tuple[Any, ...] = ()


class Registry:
    """The installed capabilities' contributions, merged; duplicates are refused."""

    def __init__(self, capabilities: Iterable[Capability], settings: Any) -> None:
        self.capabilities = tuple(capabilities)
        self.models: list[ModuleType] = []
        self.jobs: dict[str, Any] = {}      # name -> jobs.JobSpec
        self.crons: dict[str, Any] = {}     # name -> jobs.CronSpec
        self.pruners: dict[str, Hook] = {}
        self.chat: list[ChatRoute] = []
        self.kinds: dict[str, Any] = {}
        self.digest_sources: dict[str, Hook] = {}
        self.timeline_sources: list[Hook] = []
        self.subtree_moved: list[Hook] = []
        self.audit_actions: dict[str, Any] = {}
        self.audit_subjects: dict[str, Any] = {}
        names: set[str] = set()
        for capability in self.capabilities:
            _add_once(names, capability.name, "capability")
            self._add(capability, settings)

    def _add(self, capability: Capability, settings: Any) -> None:
        self.models.extend(m for m in capability.models if m not in self.models)
        for function in capability.jobs:
            for attribute, table in (("__job__", self.jobs), ("__cron__", self.crons),
                                     ("__pruner__", self.pruners)):
                spec = getattr(function, attribute, None)
                if spec is not None:
                    _put(table, getattr(spec, "name", None) or function.__qualname__,
                         spec, f"{attribute.strip('_')} of {capability.name}")
        self.chat.extend(capability.chat)
        kinds = capability.kinds(settings) if callable(capability.kinds) else capability.kinds
        for kind in kinds:
            _put(self.kinds, kind.name, kind, f"notification kind of {capability.name}")
        for name, source in capability.digest_sources.items():
            _put(self.digest_sources, name, source, f"digest source of {capability.name}")
        self.timeline_sources.extend(capability.timeline_sources)
        self.subtree_moved.extend(capability.subtree_moved)
        for action in capability.audit_actions:
            _put(self.audit_actions, action.name, action, f"audit action of {capability.name}")
        for subject in capability.audit_subjects:
            _put(self.audit_subjects, subject.kind, subject, f"audit subject of {capability.name}")

    @property
    def scoped_collections(self) -> list[str]:
        """Collections whose documents carry org_ancestors (rewritten when a subtree moves)."""
        return [name for m in self.models for name in getattr(m, "SCOPED", ())]


def _add_once(names: set[str], name: str, what: str) -> None:
    if name in names:
        raise ValueError(f"{what} {name!r} is installed twice")
    names.add(name)


def _put(table: dict[str, Any], name: str, value: Any, what: str) -> None:
    if name in table and table[name] is not value:
        raise ValueError(f"{what}: {name!r} is declared twice")
    table[name] = value
