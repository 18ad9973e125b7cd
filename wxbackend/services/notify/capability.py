"""Notifications: notify(), the outbox and its delivery, inboxes, notices, the daily digest."""

from __future__ import annotations

from models import notices as notices_model
from models import notifications, notify_batches, notify_grants, notify_messages, notify_stats
from wxbackend.capability import Capability
from wxbackend.services.notify import (
    audit_actions,
    binding_notices,
    digest,
    notices,
    notify_delivery,
)

CAPABILITY = Capability(
    name="notify",
    models=(notices_model, notifications, notify_batches, notify_grants, notify_messages, notify_stats),
    jobs=(notify_delivery.deliver, notify_delivery.recover, notify_delivery.prune_notifications,
          notices.fanout_job, notices.recover_fanouts, digest.schedule_digests, digest.digest_users,
          binding_notices.binding_alert),
    kinds=(notices.NOTICE, digest.DIGEST, *binding_notices.KINDS),
    digest_sources={"unbound_members": digest.unbound_members, "member_changes": digest.member_changes},
    audit_actions=audit_actions.ACTIONS,
    audit_subjects=audit_actions.SUBJECTS,
)
