"""Coded domain errors, raised by services and rendered by handlers.

As pretix's ``CheckInError(msg, code)``: a machine-readable ``code`` for
clients and tests, a Chinese ``message`` for people, and the HTTP ``status``
the JSON API and the web pages answer with::

    raise NotFound("member_not_found", "党员不存在")
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from bson.errors import InvalidId


class DomainError(Exception):
    """A rule was violated. Rendered as ``{"error": {"code", "message"}}``."""

    status = 422

    def __init__(self, code: str, message: str, *, status: int | None = None,
                 details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        if status is not None:
            self.status = status
        self.details = details

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return {"error": body}


class InvalidInput(DomainError):
    """Bad input; ``details`` may list field errors ``[{"field", "message"}]``."""

    status = 400


class Unauthorized(DomainError):
    status = 401


class Forbidden(DomainError):
    status = 403


class NotFound(DomainError):
    status = 404


class Conflict(DomainError):
    status = 409


class TooManyRequests(DomainError):
    status = 429

    def __init__(self, code: str, message: str, *, retry_after: int) -> None:
        super().__init__(code, message)
        self.retry_after = retry_after


class Unavailable(DomainError):
    status = 503


def object_id(raw: str | ObjectId, code: str, message: str) -> ObjectId:
    """An id from a URL, form or body; a malformed one names nothing: NotFound."""
    if isinstance(raw, ObjectId):
        return raw
    try:
        return ObjectId(raw)
    except (InvalidId, TypeError):
        raise NotFound(code, message) from None
