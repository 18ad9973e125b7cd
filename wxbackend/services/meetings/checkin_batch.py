"""Group commit of check-ins: many members' marks in one round of writes.

SecantusDB serialises writes and each costs ~1 ms of its CPU before the first
byte of data, so one write per scan would cost a hall of members scanning at
once a write each. Instead, while one round for a meeting is in flight, the
scans that arrive queue up, and the next round takes them all::

    writer = writer_for(ctx, meeting)             # one per meeting (and start/end) per process
    outcome = await writer.submit(member_id, mark)
    # ("new", mark) | ("existing", the stored mark) | None (the meeting changed: judge again)

A round is :func:`models.meetings.add_marks`: one roll naming the members,
one ``insert_many`` of the marks (a mark is its own small document, keyed by
meeting and member, so a second one for a member fails whoever writes it),
and one ``$inc`` of the counters by exactly the marks inserted, conditional on
the meeting's check-in gate being the one read with the header the rules were
checked against (a change of the meeting's status or times turns it; then the
meeting is read to check that it still has the open status, start and end the
rules saw, else the marks are taken back and the scans judged again). The members who had a
mark already are answered from their stored marks. Correct across processes
because MongoDB's unique key, not this queue, decides; and what a round costs
does not depend on how many members the meeting has. A member the writer has
seen marked present is answered from memory when they scan again: a present
mark is never taken back.

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

from models import attendance as attendance_model
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
    gate: str | None = None     # the check-in gate of the header the rules were checked against
    queue: list[tuple[str, _Waiter]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    # Members this process has seen marked present here: a present mark is never taken
    # back nor replaced, so a second scan (a double tap, a retry) needs no database.
    present: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def submit(self, member_id: ObjectId, mark: dict[str, Any]) -> Outcome:
        key = str(member_id)
        known = self.present.get(key)
        if known is not None:
            return "existing", known
        waiter = _Waiter(mark, asyncio.get_running_loop().create_future())
        self.queue.append((key, waiter))
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
        expected = {"status": {"$in": list(meetings_model.OPEN_STATUSES)}, "start": self.start, "end": self.end}
        for _ in range(MAX_ROUNDS):
            done = await meetings_model.add_marks(self.ctx.db, self.meeting_id,
                                                  {k: waiting[k][0].mark for k in pending}, expected, self.gate)
            if done is None:  # status, start or end changed: the rules must be checked again
                break
            new, taken = done
            for key in new:
                self._resolve(key, waiting[key], "new", waiting[key][0].mark)
            stored = await attendance_model.of_members(self.ctx.db, self.meeting_id, taken)
            for key in taken:
                if key in stored:
                    self._resolve(key, waiting[key], "existing", stored[key])
            # A mark seen as taken but gone when read was taken back meanwhile: try again.
            pending = [k for k in taken if k not in stored]
            if not pending:
                return
        for key in pending:
            for waiter in waiting[key]:
                if not waiter.future.done():
                    waiter.future.set_result(None)

    def _resolve(self, key: str, waiters: list[_Waiter], outcome: str, mark: dict[str, Any]) -> None:
        # The first scan of a member wins; a second one in the same batch finds the first's mark.
        if mark["status"] == "present":
            self.present[key] = mark
        for i, waiter in enumerate(waiters):
            if not waiter.future.done():
                waiter.future.set_result((outcome, mark) if i == 0 else ("existing", mark))


class Writers(dict):
    """A process's writers, by (meeting, start, end, gate); idle ones go when there are many."""


def writer_for(ctx: AppContext, meeting: dict[str, Any]) -> Writer:
    """This process's writer of a meeting as the rules saw it (its start, end and gate)."""
    writers = ctx.state(Writers)
    key = (meeting["_id"], meeting["start"], meeting["end"], meeting.get("gate"))
    writer = writers.get(key)
    if writer is None:
        if len(writers) > 1000:
            for stale in [k for k, w in writers.items() if not w.queue and (w.task is None or w.task.done())]:
                del writers[stale]
        writer = writers[key] = Writer(ctx, meeting["_id"], meeting["start"], meeting["end"], meeting.get("gate"))
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
