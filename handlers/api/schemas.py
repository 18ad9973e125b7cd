"""Shared API schemas: the error shape and cursor pages."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

import msgspec

from handlers.base import OBJECT_ID

T = TypeVar("T")

Cursor = Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9_-]{1,512}$", description="上一页返回的 next_cursor")]
ObjectIdStr = Annotated[str, msgspec.Meta(pattern=f"^{OBJECT_ID}$", description="对象编号")]


class Schema(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of request and response bodies: unknown fields are refused."""


class FieldError(Schema):
    field: str
    message: str


class ErrorDetail(Schema):
    code: str
    message: str
    details: list[FieldError] | None = None


class ErrorBody(Schema):
    error: ErrorDetail


class Page(Schema, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


class PageQuery(Schema):
    cursor: Cursor | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20
