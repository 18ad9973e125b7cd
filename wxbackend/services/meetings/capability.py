"""Organisational life: meetings, check-in, leave, minutes, comments, votes, compliance, ledger."""

from __future__ import annotations

from models import attendance, comments, compliance, meetings, votes
from wxbackend.capability import Capability
from wxbackend.services.meetings import audit_actions, chat, meeting_notices, reminders, tally
from wxbackend.services.meetings import compliance as compliance_rules

CAPABILITY = Capability(
    name="meetings",
    models=(meetings, attendance, comments, compliance, votes),
    jobs=(*reminders.JOBS, compliance_rules.open_running_month, tally.settle_finished),
    chat=chat.CHAT,
    kinds=meeting_notices.kinds,
    subtree_moved=(compliance_rules.subtree_moved,),
    audit_actions=audit_actions.ACTIONS,
    audit_subjects=audit_actions.SUBJECTS,
)
