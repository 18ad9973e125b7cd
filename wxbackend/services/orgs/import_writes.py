"""The writes of a member import, staged so that a worker killed half way resumes them.

After the checks, :func:`plan` turns the rows into chunks of at most
a setting's number of members: the new member documents (their ids chosen now) and the
changes of registered members, each with what the changed fields held before
(``[members] import_chunk_rows`` members a chunk).
The job stores the chunks and applies them one by one (:func:`apply_chunk`): an
insert that a previous attempt already made is recognised by its id, and a
``$set`` is the same the second time, so a resumed chunk is applied once. Only
when every chunk is in do the organisations' counters move, once per run
(:func:`count`, guarded by a marker on each organisation), and then the audit
entries follow (:func:`audit`). Should a member be registered by somebody else
between the checks and the writes, the chunks applied so far are undone
(:func:`rollback_chunk`): an import stays all or nothing::

    plan = await plan_writes(ctx, rows, run_id, "名册.xlsx")
    issues = await apply_chunk(ctx, plan.chunks[0])   # [] or the rows registered meanwhile
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo.errors import BulkWriteError

from models import imports as imports_model
from models import members as members_model
from models import orgs as orgs_model
from wxbackend.context import AppContext
from wxbackend.services import orgs
from wxbackend.services.accounts import audit as audit_log
from wxbackend.services.accounts.access import Actor
from wxbackend.services.orgs import members
from wxbackend.services.orgs.import_checks import Row, batches
from wxbackend.services.orgs.import_report import ImportIssue
from wxbackend.services.orgs.import_sheet import COLUMNS

# Ids one read by id carries.
BATCH = 1000
# Organisations one $in read of their members carries.
ORGS_PER_QUERY = 200
# Stored fields compared to tell an updated member from an unchanged one.
COMPARED = ("name", "gender", "ethnicity", "birth_date", "education", "party_status",
            "joined_on", "full_on", "category")
# What a rollback may have to put back.
KEPT = (*COMPARED, "phone_enc", "phone_bidx", "org_id", "org_ancestors", "group_id", "updated_at")
REGISTERED_MEANWHILE = ("该身份证号码的党员在导入过程中已由他人登记，为保证全部导入或全部不导入，"
                        "已撤销本次导入的所有修改；请核对后重新导入")


@dataclass
class Plan:
    chunks: list[dict[str, Any]]
    created: int
    updated: int
    unchanged: int
    counts: list[dict[str, Any]]  # [{"org_id", "inc": {counter: delta}}]
    audits: list[dict[str, Any]]  # [{"org_id", "label", "org_ancestors", "details"}]


async def plan_writes(ctx: AppContext, rows: list[Row], run_id: ObjectId, filename: str) -> Plan:
    current = await _current(ctx, rows)
    changed, unchanged = [], []
    for row in rows:
        (unchanged if _unchanged(ctx, row, current) else changed).append(row)
    chunks = await asyncio.to_thread(_prepare, ctx, changed, current, run_id)
    created = sum(1 for row in changed if row.existing is None)
    return Plan(chunks, created, len(changed) - created, len(unchanged), _count_incs(changed),
                await _audits(ctx, changed, unchanged, filename))


async def _current(ctx: AppContext, rows: list[Row]) -> dict[str, dict[str, Any]]:
    """Stored fields of the registered members, by blind index: all members of the
    organisations they are in, which an import of those organisations is about."""
    org_ids = sorted({row.existing["org_id"] for row in rows if row.existing})
    fields = {**dict.fromkeys(KEPT, 1), "id_card_bidx": 1}
    found: dict[str, dict[str, Any]] = {}
    for chunk in batches(org_ids, ORGS_PER_QUERY):
        for doc in await members_model.in_orgs(ctx.db, list(chunk), fields):
            found[doc["id_card_bidx"]] = doc
    # Moved since the check (rare): read by id, so that a rollback knows what they held.
    missing = [row.existing["_id"] for row in rows if row.existing and row.bidx not in found]
    for chunk in batches(missing, BATCH):
        for doc in await members_model.by_ids(ctx.db, list(chunk), fields):
            found[doc["id_card_bidx"]] = doc
    return found


def _unchanged(ctx: AppContext, row: Row, current: dict[str, dict[str, Any]]) -> bool:
    """A registered member whose record already says what the row says."""
    doc = current.get(row.bidx or "") if row.existing else None
    if doc is None or row.org is None or doc["org_id"] != row.org["_id"]:
        return False
    phone = row.clean.get("phone")
    if doc.get("phone_bidx") != (ctx.cipher.blind_index(phone, "phone") if phone else None):
        return False
    return all(doc.get(name) == row.clean.get(name) for name in COMPARED)


def _prepare(ctx: AppContext, rows: list[Row], current: dict[str, dict[str, Any]],
             run_id: ObjectId) -> list[dict[str, Any]]:
    """The chunks: new documents and $set changes, encrypted (CPU only: runs in a thread)."""
    now = ctx.clock.now()
    chunks = []
    size = max(1, ctx.settings.members.import_chunk_rows)
    for seq, batch in enumerate(batches(rows, size)):
        inserts, insert_rows, updates = [], [], []
        for row in batch:
            assert row.org is not None
            if row.existing is None:
                inserts.append(members.new_document(ctx, row.clean, row.org))
                insert_rows.append(row.number)
            else:
                stored = current.get(row.bidx or "") or {}
                change = _changes(ctx, row, stored, now)
                updates.append({"_id": row.existing["_id"], "row": row.number, "set": change,
                                "prev": {k: stored.get(k) for k in change}})
        chunks.append({"_id": imports_model.chunk_id(run_id, seq), "run_id": run_id, "seq": seq,
                       "rows": len(batch), "inserts": inserts, "insert_rows": insert_rows,
                       "updates": updates})
    return chunks


def _changes(ctx: AppContext, row: Row, stored: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The $set of a registered member: only what differs from ``stored`` (every field
    when it is unknown). Each field written costs SecantusDB index work."""
    assert row.org is not None and row.existing is not None
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


def _count_incs(changed: list[Row]) -> list[dict[str, Any]]:
    """Counter increments per organisation: a member counts where it goes, and no longer where it was."""
    incs: dict[ObjectId, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def add(org_id: ObjectId, ancestors: list[ObjectId], status: str, sign: int) -> None:
        incs[org_id]["member_count"] += sign
        incs[org_id]["full_member_count"] += sign if status == "full" else 0
        for ancestor in ancestors:
            incs[ancestor]["subtree_member_count"] += sign

    for row in changed:
        assert row.org is not None
        add(row.org["_id"], row.org["org_ancestors"], row.clean["party_status"], +1)
        if row.existing is not None:
            old = row.existing
            add(old["org_id"], old["org_ancestors"], old["party_status"], -1)
    found = []
    for org_id, inc in incs.items():
        moved = {k: v for k, v in inc.items() if v}
        if moved:
            found.append({"org_id": org_id, "inc": moved})
    return found


async def _audits(ctx: AppContext, changed: list[Row], unchanged: list[Row],
                  filename: str) -> list[dict[str, Any]]:
    """One entry per organisation: counts only, never personal data."""
    stats: dict[ObjectId, dict[str, int]] = defaultdict(
        lambda: {"created": 0, "updated": 0, "unchanged": 0, "moved_out": 0})
    seen: dict[ObjectId, dict[str, Any]] = {}
    for row, same in [*((r, False) for r in changed), *((r, True) for r in unchanged)]:
        assert row.org is not None
        kind = "unchanged" if same else "created" if row.existing is None else "updated"
        seen[row.org["_id"]] = row.org
        stats[row.org["_id"]][kind] += 1
        if row.existing is not None and row.existing["org_id"] != row.org["_id"]:
            stats[row.existing["org_id"]]["moved_out"] += 1
    entries = []
    for org_id, counts in stats.items():
        org = seen.get(org_id) or await orgs.get(ctx, org_id)
        entries.append({"org_id": org_id, "label": org["name"], "org_ancestors": list(org["org_ancestors"]),
                        "details": {**counts, "file": filename[:100]}})
    return entries


# -- applying -------------------------------------------------------------------------

async def apply_chunk(ctx: AppContext, chunk: dict[str, Any]) -> list[ImportIssue]:
    """Write one chunk; the rows whose number somebody registered meanwhile (then nothing
    more of the chunk is written and the caller rolls the run back)."""
    inserts = chunk["inserts"]
    try:
        await members_model.insert_many(ctx.db, inserts)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != 11000 for e in errors):
            raise
        failed = [(chunk["insert_rows"][e["index"]], inserts[e["index"]]["_id"]) for e in errors]
        # Inserted by an earlier attempt of this run (the same id), or registered by somebody else.
        ours = {doc["_id"] for doc in await members_model.by_ids(ctx.db, [i for _, i in failed], {"_id": 1})}
        taken = sorted(row for row, doc_id in failed if doc_id not in ours)
        if taken:
            return [ImportIssue(row, COLUMNS["id_card"], REGISTERED_MEANWHILE, "registered_meanwhile")
                    for row in taken]
    await members_model.bulk_update(ctx.db, [(u["_id"], u["set"]) for u in chunk["updates"]])
    return []


async def rollback_chunk(ctx: AppContext, chunk: dict[str, Any]) -> None:
    """Undo a chunk (applied, partly applied or not at all: each step is idempotent)."""
    await members_model.delete_ids(ctx.db, [doc["_id"] for doc in chunk["inserts"]])
    await members_model.bulk_update(ctx.db, [(u["_id"], u["prev"]) for u in chunk["updates"]])


async def count(ctx: AppContext, run: dict[str, Any]) -> None:
    """The maintained counters, once per organisation and run whatever the retries."""
    marker = str(run["_id"])
    for entry in run["plan"]["counts"]:
        await orgs_model.adjust_counts_once(ctx.db, entry["org_id"], marker, entry["inc"])


async def forget_counted(ctx: AppContext, run: dict[str, Any]) -> None:
    counts = (run.get("plan") or {}).get("counts") or []
    await orgs_model.forget_count_markers(ctx.db, [e["org_id"] for e in counts], str(run["_id"]))


async def audit(ctx: AppContext, actor: Actor, run: dict[str, Any]) -> None:
    """The audit entries not written yet (a crash between an entry and its mark repeats one)."""
    done = set(run.get("audited") or [])
    for entry in run["plan"]["audits"]:
        if entry["org_id"] in done:
            continue
        await audit_log.record(ctx, actor, "member.import", "org", entry["org_id"], entry["label"],
                               entry["org_ancestors"], entry["details"])
        await imports_model.add_audited(ctx.db, run["_id"], entry["org_id"])
