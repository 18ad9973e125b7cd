"""Notifications: one entry point for every capability, an outbox, and everybody's inbox.

A capability declares each kind of notification in its capability
(``Capability.kinds``), then calls :func:`notify`; it never talks to WeChat itself::

    from wxbackend.services.notify import Kind, Recipient, notify

    KINDS = (Kind(
        name="meeting_published", title="会议通知", template_setting="meeting_published",
        fields={"thing1": "{title}", "time2": "{start}", "thing3": "{place}"},
        required=("title", "start", "place"), page="pages/meeting/index?id={meeting_id}"),)

    result = await notify(ctx, [Recipient(member_id=m) for m in attendees],
                          "meeting_published", {"title": ..., "start": start_dt, "place": ...,
                                                "meeting_id": str(meeting_id)},
                          subject=f"meeting:{meeting_id}:published")

What ``notify`` does, per recipient, before it returns:

- picks the channel: an official-account template message when the member
  follows the account; else a mini-program subscribe message when the member
  granted one for this kind's template; else none: the notification is
  recorded ``undeliverable`` and is only in the member's inbox
  (``GET /api/v1/me/notifications``). An admin user (``Recipient(user_id=)``)
  gets it in the management web's inbox at once (``sent``, channel ``web``),
  and by WeChat too when the user record names a ``member_id`` who follows.
- renders the kind's template once for all recipients (template ids and field
  mapping from the settings, see :func:`templates_of`). Missing data raises
  :class:`~wxbackend.errors.InvalidInput` here, at enqueue, never in a worker.
- writes one outbox document per recipient (``models.notifications``) with an
  idempotency key ``recipient + kind + subject``: calling again with the same
  subject adds nobody twice (``result.duplicates``). So ``subject`` must name
  the event, e.g. ``f"meeting:{id}:published"``, not just the kind.
- enqueues delivery jobs (``wxbackend.services.notify.notify_delivery``) that carry
  outbox ids in batches; workers send within the rate limits and record the
  outcome and WeChat's errcode on each document.

Kinds with ``digest=True`` do not interrupt secretaries: admin users find them
in their inbox and in the next daily digest (``wxbackend.services.notify.digest``),
unless the kind is ``urgent`` (or listed in ``[notify] urgent_kinds``).

Templates: ``Kind.template_setting`` names either a settings section that
holds ``oa_template_id`` / ``mp_template_id`` (and optionally ``oa_fields`` /
``mp_fields``), e.g. ``"meetings"``, or a prefix of keys in ``[notify]``:
``"notice"`` reads ``[notify] notice_oa_template_id`` and so on. An empty
template id means "not configured": that channel is not used for the kind.
A fields setting overrides ``Kind.fields``: ``"thing1={title};time2={start}"``.

The package is the notifications capability: ``kinds`` (kinds, recipients,
rendering), ``send`` (``notify`` and what it writes) and ``inbox`` are imported
here, so callers write ``notify.notify(...)``; ``notify_delivery`` sends, the
``outbox`` pages show what was sent, ``notices`` and ``digest`` use ``notify``.
"""

from __future__ import annotations

from wxbackend.services.notify.inbox import (
    InboxItem,
    inbox,
    inbox_item,
    mark_read,
    parse_id,
)
from wxbackend.services.notify.kinds import (
    OLD_STYLE_LIMIT,
    VALUE_LIMITS,
    Content,
    Kind,
    NotifyResult,
    Recipient,
    Templates,
    render,
    templates_of,
)
from wxbackend.services.notify.send import (
    INSERT_CHUNK,
    check_subject,
    content_of,
    documents,
    enqueue_batches,
    fan_out,
    insert_and_count,
    is_urgent,
    local_day,
    make_batches,
    materialise,
    notify,
    plan,
    stat_deltas,
    store_message,
)

__all__ = [
    "INSERT_CHUNK",
    "OLD_STYLE_LIMIT",
    "VALUE_LIMITS",
    "Content",
    "InboxItem",
    "Kind",
    "NotifyResult",
    "Recipient",
    "Templates",
    "check_subject",
    "content_of",
    "documents",
    "enqueue_batches",
    "fan_out",
    "inbox",
    "inbox_item",
    "insert_and_count",
    "is_urgent",
    "local_day",
    "make_batches",
    "mark_read",
    "materialise",
    "notify",
    "parse_id",
    "plan",
    "render",
    "stat_deltas",
    "store_message",
    "templates_of",
]
