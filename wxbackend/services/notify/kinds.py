"""Kinds of notification, recipients, templates, and rendering a kind's data into what each channel shows."""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from bson import ObjectId

from wxbackend.clock import SHANGHAI
from wxbackend.context import AppContext
from wxbackend.errors import InvalidInput

VALUE_LIMITS = {"thing": 20, "character_string": 32, "phrase": 5, "name": 10, "number": 32,
                "letter": 32, "symbol": 5, "phone_number": 17, "car_number": 8}
OLD_STYLE_LIMIT = 200  # first / keywordN / remark of classic template messages


@dataclass(frozen=True)
class Recipient:
    """A member (WeChat + the mini-program inbox) or an admin user (the web inbox)."""

    member_id: ObjectId | None = None
    user_id: ObjectId | None = None


@dataclass(frozen=True)
class Kind:
    """A kind of notification; see the module docstring."""

    name: str
    title: str                                  # shown in inboxes and the outbox: 会议通知
    template_setting: str                       # where the template ids and mappings live
    fields: dict[str, str] = field(default_factory=dict)  # template key -> format over data
    required: tuple[str, ...] = ()              # data that must be present and not empty
    urgent: bool = False                        # never waits for the digest
    digest: bool = False                        # admin users get it in the daily digest
    link: str = ""                              # management-web path, format over data
    page: str = ""                              # mini-program page, format over data
    summary: str = ""                           # inbox text, format over data
    mp_fields: dict[str, str] | None = None     # subscribe-message mapping (default: fields)


    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(f"kind name must be letters, digits and _: {self.name!r}")


@dataclass
class NotifyResult:
    message_id: ObjectId | None = None
    created: int = 0         # new outbox documents
    duplicates: int = 0      # already notified of this subject: nothing added
    queued: int = 0          # waiting for WeChat delivery by a worker
    web: int = 0             # admin users: in their web inbox now
    undeliverable: int = 0   # members without a WeChat channel: inbox only
    skipped: int = 0         # unknown or inactive recipients
    planned: int = 0         # a big fan-out: recipients handed to workers (see plan())
    ids: list[ObjectId] = field(default_factory=list)


# -- templates and rendering ---------------------------------------------------------------

@dataclass(frozen=True)
class Templates:
    oa_template_id: str
    oa_fields: dict[str, str]
    mp_template_id: str
    mp_fields: dict[str, str]


def _parse_fields(text: str, setting: str) -> dict[str, str]:
    found = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise InvalidInput("notify_bad_fields", f"消息模板字段设置有误：{setting} = {text!r}")
        found[key.strip()] = value.strip()
    return found


def templates_of(ctx: AppContext, kind: Kind) -> Templates:
    """Template ids and field mappings of ``kind`` from the settings (see module docstring)."""
    section = getattr(ctx.settings, kind.template_setting, None)
    if section is not None and hasattr(section, "oa_template_id"):
        get = lambda key: str(getattr(section, key, "") or "")  # noqa: E731
        where = f"[{kind.template_setting}] "
    else:
        notify = ctx.settings.notify
        get = lambda key: str(getattr(notify, f"{kind.template_setting}_{key}", "") or "")  # noqa: E731
        where = f"[notify] {kind.template_setting}_"
    oa_fields = _parse_fields(get("oa_fields"), where + "oa_fields") or dict(kind.fields)
    mp_fields = (_parse_fields(get("mp_fields"), where + "mp_fields")
                 or dict(kind.mp_fields if kind.mp_fields is not None else kind.fields))
    return Templates(get("oa_template_id"), oa_fields, get("mp_template_id"), mp_fields)


def _display(value: Any) -> str:
    """Data values as people read them: times in Asia/Shanghai."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    return str(value).strip()


def _names(pattern: str) -> set[str]:
    return {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(pattern)
            if name}


def _fit(key: str, value: str) -> str:
    """Cut a value to WeChat's limit for its keyword type (else WeChat refuses it, 47003)."""
    kind = key.rstrip("0123456789").rstrip("_") or key
    limit = VALUE_LIMITS.get(kind, OLD_STYLE_LIMIT)
    return value if len(value) <= limit else value[:limit - 1] + "…"


@dataclass(frozen=True)
class Content:
    kind: Kind
    data: dict[str, str]
    title: str
    summary: str
    link: str
    page: str
    oa: dict[str, Any] | None
    mp: dict[str, Any] | None


def render(ctx: AppContext, kind_name: str, data: dict[str, Any]) -> Content:
    """Check ``data`` against the kind and render its templates; InvalidInput if incomplete."""
    kind = ctx.registry.kinds.get(kind_name)
    if kind is None:
        raise InvalidInput("notify_unknown_kind", f"未知的通知类型：{kind_name}")
    if not isinstance(data, dict):
        raise InvalidInput("notify_bad_data", f"通知“{kind.title}”的数据应为字典")
    clean = {str(k): _display(v) for k, v in data.items()}
    templates = templates_of(ctx, kind)
    patterns = [kind.link, kind.page, kind.summary, *templates.oa_fields.values(),
                *templates.mp_fields.values()]
    needed = set(kind.required).union(*(_names(p) for p in patterns))
    missing = sorted(n for n in needed if not clean.get(n))
    if missing:
        raise InvalidInput("notify_missing_data",
                           f"通知“{kind.title}”缺少数据：{'、'.join(missing)}",
                           details=[{"field": n, "message": "不能为空"} for n in missing])

    def fill(mapping: dict[str, str]) -> dict[str, dict[str, str]]:
        return {key: {"value": _fit(key, pattern.format_map(clean))} for key, pattern in mapping.items()}

    oa = ({"template_id": templates.oa_template_id, "data": fill(templates.oa_fields)}
          if templates.oa_template_id and templates.oa_fields else None)
    mp = ({"template_id": templates.mp_template_id, "data": fill(templates.mp_fields)}
          if templates.mp_template_id and templates.mp_fields else None)
    title = f"{kind.title}：{clean['title']}" if clean.get("title") else kind.title
    return Content(kind, clean, title[:80], kind.summary.format_map(clean) if kind.summary else "",
                   kind.link.format_map(clean), kind.page.format_map(clean), oa, mp)
