"""Group commit of check-ins: many members' marks in one conditional update.

SecantusDB serialises writes and rewrites the whole meeting document on each
(a 1,000-member meeting's document is ~100 KB; one update takes 15-45 ms), so
one update per scan caps a meeting at ~30 check-ins a second while a hall
full of members scans at once. Instead, while one write for a meeting is in
flight, the scans that arrive queue up, and the next write takes them all::

    writer = writer_for(ctx, meeting)             # one per meeting (and start/end) per process
    outcome = await writer.submit(member_id, mark)
    # ("new", mark) | ("existing", the stored mark) | None (the meeting changed: judge again)

The write keeps the contract of docs/MEETINGS-DESIGN.md: its filter holds the
open statuses, the start and end the rules were checked against, and "no mark
yet" for *every* member in it, and ``counts.present`` moves by exactly the
number of marks set. When the filter fails (someone in the batch is already
marked, or the meeting changed), one read tells which, those are answered
from the stored marks, and the rest are written again. Correct across
processes because MongoDB, not this queue, decides.

:class:`Coalescer` does the same for reads: the members behind concurrent
requests are loaded with one ``$in`` query.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId

from models import meetings as meetings_model
from wxbackend.context import AppContext

log = logging.getLogger(__name__)

# Most marks one write carries (the filter names each of them).
MAX_BATCH = 200
# Rounds of "write, read who was already marked, write the rest" before giving up.
MAX_ROUNDS = 4

Outcome = tuple[str, dict[str, Any]] | None


@dataclass
class _Waiter:
    mark: dict[str, Any]
    future: asyncio.Future[Outcome]


@dataclass
class Writer:
    ctx: AppContext
    meeting_id: ObjectId
    start: Any
    end: Any
    queue: list[tuple[str, _Waiter]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def submit(self, member_id: ObjectId, mark: dict[str, Any]) -> Outcome:
        waiter = _Waiter(mark, asyncio.get_running_loop().create_future())
        self.queue.append((str(member_id), waiter))
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._run())
        return await waiter.future

    async def _run(self) -> None:
        while self.queue:
            batch, self.queue = self.queue[:MAX_BATCH], self.queue[MAX_BATCH:]
            try:
                await self._flush(batch)
            except Exception as exc:  # a database outage: every waiter of the batch fails with it
                for _, waiter in batch:
                    if not waiter.future.done():
                        waiter.future.set_exception(exc)

    async def _flush(self, batch: list[tuple[str, _Waiter]]) -> None:
        waiting: dict[str, list[_Waiter]] = {}
        for key, waiter in batch:
            waiting.setdefault(key, []).append(waiter)
        pending = list(waiting)
        for _ in range(MAX_ROUNDS):
            if await self._write(pending, waiting):
                for key in pending:
                    _resolve(waiting[key], "new", waiting[key][0].mark)
                return
            stored = await self._read(pending)
            if stored is None:  # status, start or end changed: the rules must be checked again
                break
            for key in [k for k in pending if k in stored]:
                _resolve(waiting[key], "existing", stored[key])
                pending.remove(key)
            if not pending:
                return
        for key in pending:
            for waiter in waiting[key]:
                if not waiter.future.done():
                    waiter.future.set_result(None)

    async def _write(self, pending: list[str], waiting: dict[str, list[_Waiter]]) -> bool:
        expected: dict[str, Any] = {"status": {"$in": list(meetings_model.OPEN_STATUSES)},
                                    "start": self.start, "end": self.end}
        expected.update({f"attendance.{k}": {"$exists": False} for k in pending})
        changes = {"$set": {f"attendance.{k}": waiting[k][0].mark for k in pending},
                   "$inc": {"counts.present": len(pending)}}
        return await meetings_model.update_one_if(self.ctx.db, self.meeting_id, expected, changes)

    async def _read(self, pending: list[str]) -> dict[str, dict[str, Any]] | None:
        """The stored marks among ``pending``; None when the meeting itself changed."""
        fields = {"status": 1, "start": 1, "end": 1, **{f"attendance.{k}": 1 for k in pending}}
        doc = await meetings_model.get(self.ctx.db, self.meeting_id, fields)
        if (doc is None or doc["status"] not in meetings_model.OPEN_STATUSES
                or doc["start"] != self.start or doc["end"] != self.end):
            return None
        return doc.get("attendance") or {}


def _resolve(waiters: list[_Waiter], outcome: str, mark: dict[str, Any]) -> None:
    # The first scan of a member wins; a second one in the same batch finds the first's mark.
    for i, waiter in enumerate(waiters):
        if not waiter.future.done():
            waiter.future.set_result((outcome, mark) if i == 0 else ("existing", mark))


class Writers(dict):
    """A process's writers, by (meeting, start, end); idle ones go when there are many."""


def writer_for(ctx: AppContext, meeting: dict[str, Any]) -> Writer:
    """This process's writer of a meeting as the rules saw it (its start and end)."""
    writers = ctx.state(Writers)
    key = (meeting["_id"], meeting["start"], meeting["end"])
    writer = writers.get(key)
    if writer is None:
        if len(writers) > 1000:
            for stale in [k for k, w in writers.items() if not w.queue and (w.task is None or w.task.done())]:
                del writers[stale]
        writer = writers[key] = Writer(ctx, meeting["_id"], meeting["start"], meeting["end"])
    return writer


@dataclass
class Coalescer:
    """Concurrent ``get(key)`` calls share one ``fetch(keys)`` (a dict of what was found)."""

    fetch: Callable[[list[Hashable]], Awaitable[dict[Hashable, Any]]]
    max_batch: int = MAX_BATCH
    queue: dict[Hashable, asyncio.Future[Any]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None

    async def get(self, key: Hashable) -> Any:
        future = self.queue.get(key)
        if future is None:
            future = self.queue[key] = asyncio.get_running_loop().create_future()
            if self.task is None or self.task.done():
                self.task = asyncio.ensure_future(self._run())
        return await asyncio.shield(future)

    async def _run(self) -> None:
        while self.queue:
            batch = dict(list(self.queue.items())[:self.max_batch])
            for key in batch:
                del self.queue[key]
            try:
                found = await self.fetch(list(batch))
            except Exception as exc:
                for future in batch.values():
                    if not future.done():
                        future.set_exception(exc)
                continue
            for key, future in batch.items():
                if not future.done():
                    future.set_result(found.get(key))
