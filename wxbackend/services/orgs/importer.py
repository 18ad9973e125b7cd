"""Member import from the secretaries' spreadsheet: all or nothing, with a row-by-row report.

Every row is checked before anything is written: its fields (by
``members.validate_fields``, the one validation the web form uses too), its
党组织编码 (exists, within the actor's scope, an active branch), ID-card
numbers repeated in the file, and members already registered elsewhere (said
without saying where, audited, and costing the admin's lookups: :mod:`.lookups`). One
bad row means nothing changes, and the report lists every problem by row
number (header = row 1), column and reason. A clean file inserts the new
members and updates those already registered (matched by ID-card number), so
importing the same file again updates rather than duplicates::

    result = await importer.import_file(ctx, actor, data, "名册.xlsx", target_org_id=branch_id)
    if not result.ok:
        for issue in result.errors:
            print(issue.row, issue.column, issue.message)
    print(result.summary())

The file format (headers, aliases, cell types) is :mod:`.import_sheet`'s job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from bson import ObjectId
from pymongo.errors import BulkWriteError, PyMongoError

from models import members as members_model
from models import orgs as orgs_model
from models.enums import MEMBER_STATES
from wxbackend.context import AppContext
from wxbackend.errors import Conflict, DomainError, InvalidInput, NotFound
from wxbackend.services import orgs
from wxbackend.services.accounts import audit
from wxbackend.services.accounts.access import Actor
from wxbackend.services.orgs import lookups, members
from wxbackend.services.orgs.import_report import ImportIssue, ImportResult
from wxbackend.services.orgs.import_report import Report as _Report
from wxbackend.services.orgs.import_sheet import MAX_BYTES, ORG_CODE, read_sheet
from wxbackend.services.orgs.import_sheet import Sheet as Sheet  # re-exported: callers build one

log = logging.getLogger("wxbackend.import")

# Documents one write (insert_many, bulk_write) carries.
BATCH = 1000
# ID-card numbers one $in lookup carries: SecantusDB's cost per number grows with
# the list (measured ~0.4 ms at 100, ~4 ms at 1,000).
LOOKUP_BATCH = 100
# One import at a time per target organisation (a double-clicked upload would
# otherwise race itself); the lock expires should a process die holding it.
LOCK_SECONDS = 15 * 60
# Stored fields compared to tell an updated member from an unchanged one.
COMPARED = ("name", "gender", "ethnicity", "birth_date", "education", "party_status",
            "joined_on", "full_on", "category")
T = TypeVar("T")


@dataclass
class _Row:
    number: int
    clean: dict[str, Any]
    bidx: str | None  # blind index of a valid ID-card number
    code: str  # 党组织编码 as written; "" = the default organisation
    org: dict[str, Any] | None = None
    existing: dict[str, Any] | None = None


# -- entry points -----------------------------------------------------------------

async def import_file(ctx: AppContext, actor: Actor, data: bytes, filename: str, *,
                      target_org_id: ObjectId) -> ImportResult:
    """Import an uploaded file into ``target_org_id`` (the page's organisation).

    Rows without a 党组织编码 go to the target; rows with one must name an
    organisation of the target's subtree. Raises only for the target itself
    (NotFound, Forbidden) and for an actor whose lookups are spent (TooManyRequests
    ``too_many_lookups``, see :mod:`.lookups`); everything about the file is in the result.
    """
    target = await orgs.get(ctx, target_org_id)
    actor.require("member.import", target["org_ancestors"])
    return await _run(ctx, actor, data, filename, default=target, within=target)


async def import_path(ctx: AppContext, actor: Actor, path: str | Path, *,
                      default_org_code: str | None = None) -> ImportResult:
    """Import a file from disk (the ``import-members`` command)."""
    path = Path(path)
    default = None
    if default_org_code:
        default = await orgs_model.get_by_code(ctx.db, default_org_code.strip())
        if default is None:
            raise NotFound("org_code_unknown", f"找不到组织编码“{default_org_code}”")
        actor.require("member.import", default["org_ancestors"])
    result = ImportResult(path.name)
    try:
        if path.stat().st_size > MAX_BYTES:
            result.errors.append(ImportIssue(None, "", "文件超过10MB，请分成几个文件分别导入",
                                             "import_too_large"))
            return result
        data = await asyncio.to_thread(path.read_bytes)
    except OSError as exc:
        result.errors.append(ImportIssue(None, "", f"无法打开文件：{exc.strerror or exc}",
                                         "import_unreadable"))
        return result
    return await _run(ctx, actor, data, path.name, default=default, within=None)


async def _run(ctx: AppContext, actor: Actor, data: bytes, filename: str, *,
               default: dict[str, Any] | None, within: dict[str, Any] | None) -> ImportResult:
    async with _exclusive(ctx, (within or default or {}).get("_id", "any")):
        return await _import(ctx, actor, data, filename, default, within)


@contextlib.asynccontextmanager
async def _exclusive(ctx: AppContext, key: Any) -> AsyncIterator[None]:
    name, token = f"import:lock:{key}".encode(), secrets.token_hex(8).encode()
    if not await ctx.redis.set(name, token, nx=True, ex=LOCK_SECONDS):
        raise Conflict("import_running", "该组织正在导入党员，请等待上一次导入完成后再试")
    try:
        yield
    finally:
        if await ctx.redis.get(name) == token:
            await ctx.redis.delete(name)


async def _import(ctx: AppContext, actor: Actor, data: bytes, filename: str,
                  default: dict[str, Any] | None, within: dict[str, Any] | None) -> ImportResult:
    result = ImportResult(filename)
    try:
        sheet = await asyncio.to_thread(read_sheet, data, filename)
    except InvalidInput as exc:
        result.errors.append(ImportIssue(None, "", exc.message, exc.code))
        return result
    result.rows = len(sheet.rows)
    report = _Report(sheet, result)
    rows = await _check(ctx, actor, report, default, within)
    if result.errors:
        # Row by row, and within a row in the file's column order.
        order = {label: i for i, label in enumerate(sheet.columns.values())}
        result.errors.sort(key=lambda e: (e.row or 0, order.get(e.column, len(order))))
        return result
    await _write(ctx, actor, rows, result)
    return result


# -- checks -----------------------------------------------------------------------

async def _check(ctx: AppContext, actor: Actor, report: _Report, default: dict[str, Any] | None,
                 within: dict[str, Any] | None) -> list[_Row]:
    for issue in report.sheet.issues:
        report.fail(issue.row, issue.field, issue.message, "id_card_numeric")
    rows = await asyncio.to_thread(_validate_rows, ctx, report)
    _check_duplicates(rows, report)
    default_ok = _check_default(rows, default, report)
    await _resolve_orgs(ctx, actor, rows, report, default if default_ok else None, within)
    await _match_existing(ctx, actor, rows, report, within or default)
    return rows


def _validate_rows(ctx: AppContext, report: _Report) -> list[_Row]:
    """Each row through ``members.validate_fields`` (CPU only: runs in a thread)."""
    today = ctx.clock.today()
    unreadable = {(i.row, i.field) for i in report.sheet.issues}
    rows = []
    for number, raw in report.sheet.rows:
        clean, errors = members.validate_fields(raw, today=today)
        for error in errors:
            if (number, error.field) not in unreadable:  # reported once, by the reader
                report.fail(number, error.field, error.message)
        card = clean.get("id_card")
        bidx = ctx.cipher.blind_index(card, "id_card") if card else None
        rows.append(_Row(number, clean, bidx, raw.get(ORG_CODE, "").strip()))
    return rows


def _check_duplicates(rows: list[_Row], report: _Report) -> None:
    numbers: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        if row.bidx:
            numbers[row.bidx].append(row.number)
    for same in numbers.values():
        for number in same if len(same) > 1 else ():
            others = "、".join(str(n) for n in same if n != number)
            report.fail(number, "id_card", f"身份证号码与第{others}行重复", "duplicate_in_file")


def _check_default(rows: list[_Row], default: dict[str, Any] | None, report: _Report) -> bool:
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


async def _resolve_orgs(ctx: AppContext, actor: Actor, rows: list[_Row], report: _Report,
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


async def _match_existing(ctx: AppContext, actor: Actor, rows: list[_Row], report: _Report,
                          target: dict[str, Any] | None) -> None:
    """Members already registered: updated when the actor may, reported (without where) if not."""
    with_card = [row for row in rows if row.bidx]
    # The report answers "is this number registered?" for every row: a spent budget refuses first.
    await lookups.ensure_budget(ctx, actor)
    found: dict[str, dict[str, Any]] = {}
    for chunk in _batches(with_card, LOOKUP_BATCH):
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


async def _report_elsewhere(ctx: AppContext, actor: Actor, elsewhere: list[tuple[_Row, dict[str, Any]]],
                            report: _Report, target: dict[str, Any] | None) -> None:
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


def _batches(items: Sequence[T], size: int = BATCH) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# -- writes -----------------------------------------------------------------------

@dataclass
class _Written:
    """Rows whose write the database confirmed, and those that needed none."""

    created: list[_Row] = field(default_factory=list)
    updated: list[_Row] = field(default_factory=list)
    unchanged: list[_Row] = field(default_factory=list)


async def _write(ctx: AppContext, actor: Actor, rows: list[_Row], result: ImportResult) -> None:
    current = await _current(ctx, rows)
    written = _Written()
    changed = []
    for row in rows:
        (written.unchanged if _unchanged(ctx, row, current) else changed).append(row)
    new_docs, updates = await asyncio.to_thread(_prepare, ctx, changed, current)
    try:
        await _insert(ctx, new_docs, written)
        await _update(ctx, updates, written)
    except PyMongoError:
        # Validation was complete, so this is the database failing (or a member
        # created concurrently). Say exactly what was written; re-importing the
        # same file completes it without duplicates.
        log.exception("member import of %s failed halfway: %d of %d created, %d of %d updated",
                      result.filename, len(written.created), len(new_docs), len(written.updated),
                      len(updates))
        result.errors.append(ImportIssue(
            None, "", f"写入数据库时出错，导入未完成：已新增{len(written.created)}人、更新"
            f"{len(written.updated)}人，其余未写入。请联系系统管理员；排除故障后重新导入同一文件即可补全"
            "（已写入的党员会被更新，不会重复）。", "import_partial"))
    result.created, result.updated = len(written.created), len(written.updated)
    result.unchanged = len(written.unchanged)
    await _adjust_counts(ctx, written)
    await _audit(ctx, actor, written, result)
    if result.ok:
        log.info("member import of %s: %d created, %d updated, %d unchanged", result.filename,
                 result.created, result.updated, result.unchanged)


async def _current(ctx: AppContext, rows: list[_Row]) -> dict[str, dict[str, Any]]:
    """Stored fields of the registered members, by blind index: all members of the
    organisations they are in, which an import of those organisations is about."""
    org_ids = sorted({row.existing["org_id"] for row in rows if row.existing})
    fields = {**dict.fromkeys(COMPARED, 1), "id_card_bidx": 1, "phone_bidx": 1, "org_id": 1}
    found: dict[str, dict[str, Any]] = {}
    for chunk in _batches(org_ids, members.MAX_ORGS_PER_QUERY):
        for doc in await members_model.in_orgs(ctx.db, list(chunk), fields):
            found[doc["id_card_bidx"]] = doc
    return found


def _unchanged(ctx: AppContext, row: _Row, current: dict[str, dict[str, Any]]) -> bool:
    """A registered member whose record already says what the row says."""
    doc = current.get(row.bidx or "") if row.existing else None
    if doc is None or row.org is None or doc["org_id"] != row.org["_id"]:
        return False
    phone = row.clean.get("phone")
    if doc.get("phone_bidx") != (ctx.cipher.blind_index(phone, "phone") if phone else None):
        return False
    return all(doc.get(name) == row.clean.get(name) for name in COMPARED)


Prepared = list[tuple[_Row, dict[str, Any]]]


def _prepare(ctx: AppContext, rows: list[_Row],
             current: dict[str, dict[str, Any]]) -> tuple[Prepared, Prepared]:
    """New documents and $set changes, encrypted (CPU only: runs in a thread)."""
    now = ctx.clock.now()
    new_docs, updates = [], []
    for row in rows:
        assert row.org is not None
        if row.existing is None:
            new_docs.append((row, members.new_document(ctx, row.clean, row.org)))
        else:
            updates.append((row, _changes(ctx, row, current.get(row.bidx or ""), now)))
    return new_docs, updates


def _changes(ctx: AppContext, row: _Row, stored: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    """The $set of a registered member: only what differs from ``stored`` (every field
    when it is unknown). Each field written costs SecantusDB index work."""
    assert row.org is not None and row.existing is not None
    stored = stored or {}
    changes = {k: v for k, v in row.clean.items()
               if k not in ("id_card", "phone") and (k not in stored or stored[k] != v)}
    personal = members.personal_fields(ctx, row.clean)
    if "phone_bidx" not in stored or stored["phone_bidx"] != personal["phone_bidx"]:
        changes.update(phone_enc=personal["phone_enc"], phone_bidx=personal["phone_bidx"])
    if row.org["_id"] != row.existing["org_id"]:
        changes.update(org_id=row.org["_id"], org_ancestors=list(row.org["org_ancestors"]),
                       group_id=None)  # 党小组 belong to the branch the member left
    changes["updated_at"] = now
    return changes


async def _insert(ctx: AppContext, items: list[tuple[_Row, dict[str, Any]]], written: _Written) -> None:
    for chunk in _batches(items):
        try:
            await members_model.insert_many(ctx.db, [doc for _, doc in chunk])
        except BulkWriteError as exc:
            failed = {e["index"] for e in exc.details.get("writeErrors", [])}
            written.created.extend(row for i, (row, _) in enumerate(chunk) if i not in failed)
            raise
        written.created.extend(row for row, _ in chunk)


async def _update(ctx: AppContext, items: list[tuple[_Row, dict[str, Any]]], written: _Written) -> None:
    for chunk in _batches(items):
        changes = [(row.existing["_id"], change) for row, change in chunk if row.existing]
        try:
            await members_model.bulk_update(ctx.db, changes)
        except BulkWriteError as exc:
            failed = {e["index"] for e in exc.details.get("writeErrors", [])}
            written.updated.extend(row for i, (row, _) in enumerate(chunk) if i not in failed)
            raise
        written.updated.extend(row for row, _ in chunk)


def _count_deltas(written: _Written) -> dict[ObjectId, list[Any]]:
    """org id -> [org_ancestors, members delta, full members delta]."""
    deltas: dict[ObjectId, list[Any]] = {}

    def add(org_id: ObjectId, ancestors: list[ObjectId], status: str, sign: int) -> None:
        entry = deltas.setdefault(org_id, [list(ancestors), 0, 0])
        entry[1] += sign
        entry[2] += sign if status == "full" else 0

    for row in written.created + written.updated:
        assert row.org is not None
        add(row.org["_id"], row.org["org_ancestors"], row.clean["party_status"], +1)
        if row.existing is not None:
            old = row.existing
            add(old["org_id"], old["org_ancestors"], old["party_status"], -1)
    return deltas


async def _adjust_counts(ctx: AppContext, written: _Written) -> None:
    """The maintained counters, once per organisation the import touched."""
    deltas = _count_deltas(written)
    try:
        for org_id, (ancestors, count, full) in deltas.items():
            await orgs_model.adjust_member_counts(ctx.db, org_id, ancestors, count, full)
    except PyMongoError:
        log.critical("member import wrote members but could not adjust the organisation counters; "
                     "fix by hand: %s", {str(k): v[1:] for k, v in deltas.items()})
        raise


async def _audit(ctx: AppContext, actor: Actor, written: _Written, result: ImportResult) -> None:
    """One entry per organisation: counts only, never personal data."""
    stats: dict[ObjectId, dict[str, int]] = defaultdict(
        lambda: {"created": 0, "updated": 0, "unchanged": 0, "moved_out": 0})
    orgs_seen: dict[ObjectId, dict[str, Any]] = {}
    for kind, rows in (("created", written.created), ("updated", written.updated),
                       ("unchanged", written.unchanged)):
        for row in rows:
            assert row.org is not None
            orgs_seen[row.org["_id"]] = row.org
            stats[row.org["_id"]][kind] += 1
            if row.existing is not None and row.existing["org_id"] != row.org["_id"]:
                stats[row.existing["org_id"]]["moved_out"] += 1
    for org_id, counts in stats.items():
        org = orgs_seen.get(org_id) or await orgs.get(ctx, org_id)
        details: dict[str, Any] = {**counts, "file": result.filename[:100]}
        if result.partial:
            details["partial"] = True
        await audit.record(ctx, actor, "member.import", "org", org_id, org["name"],
                           org["org_ancestors"], details)
