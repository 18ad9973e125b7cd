"""Organisations: the tree, members, their import, and their WeChat identity (binding, chat)."""

from __future__ import annotations

from models import members, orgs
from models import wechat as followers
from wxbackend.capability import Capability
from wxbackend.services.orgs import chat, timeline

CAPABILITY = Capability(
    name="orgs",
    models=(orgs, members, followers),
    chat=chat.CHAT,
    timeline_sources=(timeline.record_events,),
)
