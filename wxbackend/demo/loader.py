"""Bulk-loading machinery shared by the demo city and its history: batched
``insert_many`` with the next batch built while one is in flight (:class:`Loader`),
and the secondary indexes of the filled collections dropped for the load and built
once afterwards (:class:`IndexesDeferred`).
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


class IndexesDeferred:
    """Drop the secondary indexes of the (empty) collections the seed fills and build
    them once afterwards, also when the load fails. A process that starts meanwhile
    may recreate them (models.ensure_indexes): loading is then slower, not wrong, and
    our generator keeps ID-card numbers and codes unique by itself."""

    NAMES = (members_model.COLLECTION, orgs_model.COLLECTION)

    def __init__(self, ctx: AppContext, phases: dict[str, float],
                 progress: Callable[[str], None]) -> None:
        self.ctx, self.phases, self.progress = ctx, phases, progress

    async def __aenter__(self) -> None:
        for name in self.NAMES:
            await self.ctx.db[name].drop_indexes()

    async def __aexit__(self, *exc: object) -> None:
        mark = time.perf_counter()
        declared = {name: ix for model in self.ctx.registry.models for name, ix in model.INDEXES.items()}
        for name in self.NAMES:
            for index in declared[name]:  # one by one: minutes at scale 1.0, so say where
                self.progress(f"seed: index {name} {dict(index.document['key'])} "
                              f"({time.perf_counter() - mark:.0f}s)")
                await self.ctx.db[name].create_indexes([index])
        self.phases["indexes"] = time.perf_counter() - mark


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
