"""Collections of member imports run on the job queue: the runs, their files, their staged writes.

An upload becomes an ``import_runs`` document, its file (encrypted, in pieces)
``import_files`` documents and, once every row has been checked, its writes
``import_chunks`` documents that the job applies one by one, so that a worker
killed half way resumes where it stopped. Shapes::

    import_runs   {_id, org_id, org_ancestors, active: key (absent once finished),
                   default_org_id, within_org_id, actor: {id, name, roles, ip, system},
                   filename, size, state: queued|running|done|failed, phase, attempts,
                   rows, checked, written, chunks, applied (chunks 0..applied-1 are in),
                   applying (the chunk being written),
                   plan: {created, updated, unchanged, counts: [{org_id, inc}], audits: [...]},
                   audited: [org_id], pending_errors, result: {created, updated, unchanged,
                   errors: [{row, column, message, code}], error_count},
                   created_at, updated_at, started_at, finished_at}
    import_files  {_id: "<run>:<n>", run_id, n, data: Binary (AES-GCM)}
    import_chunks {_id: "<run>:<seq>", run_id, seq, rows,
                   inserts: [member document], insert_rows: [row number],
                   updates: [{_id, row, set, prev}]}

``active`` is unique (sparse): one unfinished import per organisation, held by
the database rather than by a lock that could expire under a slow import::

    await insert_run(db, doc)          # DuplicateKeyError: that organisation is importing
    await update_run_if(db, run_id, {"phase": "writing"}, {"$set": {"phase": "counting"}})
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bson import Binary, ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

import models

RUNS = "import_runs"
FILES = "import_files"
CHUNKS = "import_chunks"

SCOPED = (RUNS,)
INDEXES: dict[str, list[IndexModel]] = {
    RUNS: [
        IndexModel([("active", ASCENDING)], unique=True, sparse=True),
        IndexModel([("org_id", ASCENDING), ("_id", DESCENDING)]),
        IndexModel([("created_at", ASCENDING)]),
    ],
    FILES: [IndexModel([("run_id", ASCENDING), ("n", ASCENDING)])],
    CHUNKS: [IndexModel([("run_id", ASCENDING), ("seq", ASCENDING)])],
}

# What progress pages need of a run: never its plan or its errors.
STATUS_FIELDS = {"org_id": 1, "filename": 1, "state": 1, "phase": 1, "rows": 1, "checked": 1,
                 "written": 1, "created_at": 1, "finished_at": 1, "plan.created": 1, "plan.updated": 1,
                 "result.rows": 1, "result.created": 1,
                 "result.updated": 1, "result.unchanged": 1, "result.error_count": 1}


# -- runs ---------------------------------------------------------------------------

async def insert_run(db: AsyncDatabase, doc: dict[str, Any]) -> None:
    await db[RUNS].insert_one(doc)


async def get_run(db: AsyncDatabase, run_id: ObjectId,
                  fields: dict[str, int] | None = None) -> dict[str, Any] | None:
    return await db[RUNS].find_one({"_id": run_id}, fields)


async def active_run(db: AsyncDatabase, key: Any) -> dict[str, Any] | None:
    return await db[RUNS].find_one({"active": key}, STATUS_FIELDS)


async def recent_runs(db: AsyncDatabase, org_id: ObjectId, limit: int) -> list[dict[str, Any]]:
    cursor = db[RUNS].find({"org_id": org_id}, STATUS_FIELDS).sort("_id", DESCENDING).limit(limit)
    return await cursor.to_list()


async def set_run(db: AsyncDatabase, run_id: ObjectId, changes: dict[str, Any]) -> None:
    """Progress of the run's one holder (no state is expected)."""
    await db[RUNS].update_one({"_id": run_id}, {"$set": changes})


async def update_run_if(db: AsyncDatabase, run_id: ObjectId, expected: dict[str, Any],
                        changes: dict[str, Any]) -> dict[str, Any] | None:
    return await models.update_if(db[RUNS], run_id, expected, changes)


async def add_audited(db: AsyncDatabase, run_id: ObjectId, org_id: ObjectId) -> None:
    await db[RUNS].update_one({"_id": run_id}, {"$addToSet": {"audited": org_id}})


async def created_before(db: AsyncDatabase, before: datetime, limit: int) -> list[dict[str, Any]]:
    cursor = db[RUNS].find({"created_at": {"$lt": before}}, {"state": 1}).sort("created_at", ASCENDING)
    return await cursor.limit(limit).to_list()


async def delete_runs(db: AsyncDatabase, run_ids: list[ObjectId]) -> None:
    if run_ids:
        await db[RUNS].delete_many({"_id": {"$in": run_ids}})


# -- the uploaded file --------------------------------------------------------------

async def insert_file(db: AsyncDatabase, run_id: ObjectId, parts: list[Binary]) -> None:
    docs = [{"_id": f"{run_id}:{n}", "run_id": run_id, "n": n, "data": part} for n, part in enumerate(parts)]
    if docs:
        await db[FILES].insert_many(docs)


async def file_parts(db: AsyncDatabase, run_id: ObjectId) -> list[Binary]:
    cursor = db[FILES].find({"run_id": run_id}).sort("n", ASCENDING)
    return [doc["data"] async for doc in cursor]


async def delete_file(db: AsyncDatabase, run_id: ObjectId) -> None:
    await db[FILES].delete_many({"run_id": run_id})


# -- staged writes ------------------------------------------------------------------

async def insert_chunks(db: AsyncDatabase, docs: list[dict[str, Any]]) -> None:
    # One at a time: a chunk carries up to a thousand member documents.
    for doc in docs:
        await db[CHUNKS].insert_one(doc)


def chunk_id(run_id: ObjectId, seq: int) -> str:
    return f"{run_id}:{seq}"


async def get_chunk(db: AsyncDatabase, run_id: ObjectId, seq: int) -> dict[str, Any] | None:
    """One chunk; chunks are written once and never updated (each is up to a megabyte)."""
    return await db[CHUNKS].find_one({"_id": chunk_id(run_id, seq)})


async def delete_chunks(db: AsyncDatabase, run_id: ObjectId) -> None:
    await db[CHUNKS].delete_many({"run_id": run_id})
