"""Organisations: the tree, members, their import, and their WeChat identity (binding, chat)."""

from __future__ import annotations

from models import imports, members, orgs
from models import wechat as followers
from wxbackend.capability import Capability
from wxbackend.services.orgs import audit_actions, chat, import_runs, timeline

CAPABILITY = Capability(
    name="orgs",
    models=(orgs, members, followers, imports),
    jobs=(import_runs.member_import, import_runs.prune_import_runs),
    chat=chat.CHAT,
    timeline_sources=(timeline.record_events,),
    audit_actions=audit_actions.ACTIONS,
    audit_subjects=audit_actions.SUBJECTS,
)
