"""Bulk-loading machinery shared by the demo city and its history: batched
``insert_many`` with the next batch built while one is in flight (:class:`Loader`),
into collections whose indexes exist before the first document (:class:`IndexesFirst`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from models import members as members_model
from models import orgs as orgs_model
from wxbackend.context import AppContext

BATCH = 1000


class IndexesFirst:
    """Create the declared indexes of the collections the seed fills before it fills them.

    The seed used to drop them for the load and build each once at the end. SecantusDB
    builds an index in one go under its one storage lock: at scale 1.0 that held every
    other request of every process off the database for 10-66 s per index (measured on
    a loaded 2-core host; the members' seven took 3 minutes). On empty collections the
    indexes cost nothing to make, and each ``insert_many`` then holds the lock for its
    one batch only. The seed takes about as long (issue 19, measured at scale 0.05 on the
    same loaded host: 94 s against 93 s in all, the longest hold 5.5 s, one batch, against
    24 s, one index build)."""

    NAMES = (members_model.COLLECTION, orgs_model.COLLECTION)

    def __init__(self, ctx: AppContext, phases: dict[str, float],
                 progress: Callable[[str], None]) -> None:
        self.ctx, self.phases, self.progress = ctx, phases, progress

    async def __aenter__(self) -> None:
        mark = time.perf_counter()
        declared = {name: ix for model in self.ctx.registry.models for name, ix in model.INDEXES.items()}
        for name in self.NAMES:
            if declared.get(name):  # as models.ensure_indexes: the same models, so a no-op if done
                self.progress(f"seed: index {name}: {len(declared[name])} before loading")
                await self.ctx.db[name].create_indexes(declared[name])
        self.phases["indexes"] = time.perf_counter() - mark

    async def __aexit__(self, *exc: object) -> None:
        return None


class Loader:
    """insert_many in batches, the next batch being built while one is in flight."""

    def __init__(self, ctx: AppContext, collection: str) -> None:
        self.coll = ctx.db[collection]
        self.buffer: list[dict[str, Any]] = []
        self.pending: asyncio.Task | None = None
        self.inserted = 0

    async def add(self, docs: list[dict[str, Any]]) -> None:
        self.buffer.extend(docs)
        if len(self.buffer) >= BATCH:
            await self.flush()

    async def flush(self) -> None:
        await self.wait()
        batch, self.buffer = self.buffer, []
        if batch:
            self.pending = asyncio.create_task(self.coll.insert_many(batch, ordered=False))
            self.inserted += len(batch)
            await asyncio.sleep(0)  # let it send before we go back to building

    async def wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            await pending

    async def close(self) -> None:
        await self.flush()
        await self.wait()

    def abort(self) -> None:
        if self.pending is not None:
            self.pending.cancel()
