"""Organisational life: meetings, check-in, leave, minutes, comments, votes, compliance, ledger."""

from __future__ import annotations

from models import comments, compliance, meetings, votes
from wxbackend.capability import Capability
from wxbackend.services.meetings import chat, meeting_notices, planning
from wxbackend.services.meetings import compliance as compliance_rules

CAPABILITY = Capability(
    name="meetings",
    models=(meetings, comments, compliance, votes),
    jobs=planning.JOBS,
    chat=chat.CHAT,
    kinds=meeting_notices.kinds,
    subtree_moved=(compliance_rules.subtree_moved,),
)
