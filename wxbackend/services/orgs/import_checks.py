"""The checks of a member import: every row, before anything is written.

Each row goes through ``members.validate_fields`` (the one validation the web
form uses too); its 党组织编码 must name an active branch within the actor's
scope (and within the page's organisation); ID-card numbers repeated in the
file are named with both rows; members already registered outside the actor's
scope are reported without saying where (audited, and costing the admin's
lookups: :mod:`.lookups`). The outcome is a list of :class:`Row` for the
writes, or the problems in the :class:`ImportResult`::

    result, rows = await check_file(ctx, actor, data, "名册.xlsx", default=branch, within=branch)
    if result.ok:
        plan = await import_writes.plan(ctx, rows, ...)
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from models import members as members_model
from models import orgs as orgs_model
from models.enums import MEMBER_STATES
from wxbackend.context import AppContext
from wxbackend.errors import DomainError, InvalidInput
from wxbackend.services import orgs
from wxbackend.services.accounts.access import Actor
from wxbackend.services.orgs import lookups, members
from wxbackend.services.orgs.import_report import ImportIssue, ImportResult, Report
from wxbackend.services.orgs.import_sheet import ORG_CODE, read_sheet

# ID-card numbers one $in lookup carries: SecantusDB's cost per number grows with
# the list (measured ~0.4 ms at 100, ~4 ms at 1,000).
LOOKUP_BATCH = 100
# Rows validated between two progress reports (each batch runs in a thread).
VALIDATE_BATCH = 1000
T = TypeVar("T")
Progress = Callable[[str, int, int], Awaitable[None]]  # phase, rows done, rows


@dataclass
class Row:
    number: int
    clean: dict[str, Any]
    bidx: str | None  # blind index of a valid ID-card number
    code: str  # 党组织编码 as written; "" = the default organisation
    org: dict[str, Any] | None = None
    existing: dict[str, Any] | None = None


async def _quiet(phase: str, done: int, total: int) -> None:
    return None


async def check_file(ctx: AppContext, actor: Actor, data: bytes, filename: str, *,
                     default: dict[str, Any] | None, within: dict[str, Any] | None,
                     progress: Progress = _quiet) -> tuple[ImportResult, list[Row]]:
    """Read and check a file; ``progress(phase, rows_done, rows)`` is told along the way.

    Raises only for the actor (TooManyRequests ``too_many_lookups``); everything
    about the file is in the result, errors sorted by row and the file's column order.
    """
    result = ImportResult(filename)
    try:
        sheet = await asyncio.to_thread(read_sheet, data, filename)
    except InvalidInput as exc:
        result.errors.append(ImportIssue(None, "", exc.message, exc.code))
        return result, []
    result.rows = len(sheet.rows)
    await progress("checking", 0, result.rows)
    report = Report(sheet, result)
    rows = await check(ctx, actor, report, default, within, progress)
    if result.errors:
        order = {label: i for i, label in enumerate(sheet.columns.values())}
        result.errors.sort(key=lambda e: (e.row or 0, order.get(e.column, len(order))))
    return result, rows


async def check(ctx: AppContext, actor: Actor, report: Report, default: dict[str, Any] | None,
                within: dict[str, Any] | None, progress: Progress = _quiet) -> list[Row]:
    for issue in report.sheet.issues:
        report.fail(issue.row, issue.field, issue.message, "id_card_numeric")
    rows: list[Row] = []
    unreadable = {(i.row, i.field) for i in report.sheet.issues}
    for batch in batches(report.sheet.rows, VALIDATE_BATCH):
        rows.extend(await asyncio.to_thread(_validate_rows, ctx, report, batch, unreadable))
        await progress("checking", len(rows), len(report.sheet.rows))
    _check_duplicates(rows, report)
    default_ok = _check_default(rows, default, report)
    await _resolve_orgs(ctx, actor, rows, report, default if default_ok else None, within)
    await _match_existing(ctx, actor, rows, report, within or default)
    return rows


def _validate_rows(ctx: AppContext, report: Report, batch: Sequence[tuple[int, dict[str, str]]],
                   unreadable: set[tuple[int, str]]) -> list[Row]:
    """Each row through ``members.validate_fields`` (CPU only: runs in a thread)."""
    today = ctx.clock.today()
    rows = []
    for number, raw in batch:
        clean, errors = members.validate_fields(raw, today=today)
        for error in errors:
            if (number, error.field) not in unreadable:  # reported once, by the reader
                report.fail(number, error.field, error.message)
        card = clean.get("id_card")
        bidx = ctx.cipher.blind_index(card, "id_card") if card else None
        rows.append(Row(number, clean, bidx, raw.get(ORG_CODE, "").strip()))
    return rows


def _check_duplicates(rows: list[Row], report: Report) -> None:
    numbers: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        if row.bidx:
            numbers[row.bidx].append(row.number)
    for same in numbers.values():
        for number in same if len(same) > 1 else ():
            others = "、".join(str(n) for n in same if n != number)
            report.fail(number, "id_card", f"身份证号码与第{others}行重复", "duplicate_in_file")


def _check_default(rows: list[Row], default: dict[str, Any] | None, report: Report) -> bool:
    """Whether rows without a 党组织编码 have somewhere to go; a file-level issue if not."""
    if all(row.code for row in rows):
        return True
    if default is None:
        report.fail(None, ORG_CODE, "有的行没有填写党组织编码：请填写“党组织编码”列，或指定导入到哪个党支部",
                    "org_code_missing")
        return False
    try:
        orgs.member_org_check(default)
    except DomainError as exc:
        report.fail(None, ORG_CODE, f"“{default['name']}”不能直接接收党员（{exc.message}）："
                    "请到党支部页面导入，或为每一行填写党组织编码", "org_code_missing")
        return False
    return True


async def _resolve_orgs(ctx: AppContext, actor: Actor, rows: list[Row], report: Report,
                        default: dict[str, Any] | None, within: dict[str, Any] | None) -> None:
    found: dict[str, tuple[dict[str, Any] | None, str | None]] = {}
    for row in rows:
        if not row.code:
            row.org = default
            continue
        if row.code not in found:
            org = await orgs_model.get_by_code(ctx.db, row.code)
            found[row.code] = (org, _org_problem(actor, org, row.code, within))
        org, problem = found[row.code]
        if problem:
            report.fail(row.number, ORG_CODE, problem, "org_code_rejected")
        else:
            row.org = org


def _org_problem(actor: Actor, org: dict[str, Any] | None, code: str,
                 within: dict[str, Any] | None) -> str | None:
    if org is None:
        return f"找不到党组织编码“{code}”"
    if not actor.can("member.import", org["org_ancestors"]):
        return "无权向该党组织导入党员"
    if within is not None and within["_id"] not in org["org_ancestors"]:
        return f"该党组织不属于“{within['name']}”，请到相应党组织的页面导入"
    try:
        orgs.member_org_check(org)
    except DomainError as exc:
        return exc.message
    return None


async def _match_existing(ctx: AppContext, actor: Actor, rows: list[Row], report: Report,
                          target: dict[str, Any] | None) -> None:
    """Members already registered: updated when the actor may, reported (without where) if not."""
    with_card = [row for row in rows if row.bidx]
    # The report answers "is this number registered?" for every row: a spent budget refuses first.
    await lookups.ensure_budget(ctx, actor)
    found: dict[str, dict[str, Any]] = {}
    for chunk in batches(with_card, LOOKUP_BATCH):
        found.update(await members_model.by_id_cards(ctx.db, [row.bidx for row in chunk]))
    elsewhere = [(row, found[row.bidx]) for row in with_card if row.bidx in found
                 and not actor.can("member.import", found[row.bidx]["org_ancestors"])]
    await _report_elsewhere(ctx, actor, elsewhere, report, target)
    reported = {row.number for row, _ in elsewhere}
    for row in with_card:
        existing = found.get(row.bidx or "")
        if existing is None or row.number in reported:
            continue
        if existing["state"] != "active":
            state = MEMBER_STATES.get(existing["state"], existing["state"])
            report.fail(row.number, "id_card", f"该党员当前为“{state}”状态，不能通过导入修改，"
                        "请在党员信息页处理", "member_not_active")
        else:
            row.existing = existing


async def _report_elsewhere(ctx: AppContext, actor: Actor, elsewhere: list[tuple[Row, dict[str, Any]]],
                            report: Report, target: dict[str, Any] | None) -> None:
    """Rows whose number is registered outside the actor's scope: each named (which
    organisation holds them is not the importer's business) while the lookup budget
    lasts; beyond it, one file-level issue that names no row. Audited either way."""
    if not elsewhere:
        return
    org = target or next((row.org for row, _ in elsewhere if row.org), None)
    found = [m for _, m in elsewhere]
    hidden = await lookups.found_registered(ctx, actor, "import", org, found) if org else len(found)
    # Counted at once, so that parallel imports cannot both spend the same remainder.
    if not await lookups.spend(ctx, actor, hidden):
        report.fail(None, "id_card", "文件中已在其他党组织登记的身份证号码过多，超出查询限额，"
                    "请稍后再试或分批导入", "too_many_lookups")
        return
    for row, _ in elsewhere:
        report.fail(row.number, "id_card", "该身份证号码的党员已在本平台其他党组织登记，不在您的管理范围内；"
                    "如需调入，请办理组织关系转接", "member_out_of_scope")


def batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
