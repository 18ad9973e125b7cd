"""The callback's time budget: answer ``success`` when a handler runs too long.

WeChat waits 5 s for an answer. A handler still running after
``[wechat] callback_budget_seconds`` gets ``success`` sent for it, keeps
running in its own request task, and its reply goes out later as a
customer-service message. One timer per process watches every message in
flight, rather than a task and a timer per message: this runs for each of
them, and almost all finish in milliseconds::

    budgets = Budgets.of(ctx)
    ticket = budgets.start(seconds, answer_early)   # answer_early(): send "success" now
    reply = await handler(...)
    if not budgets.finish(ticket):
        ...                                          # too late: "success" went out already

The request task of a message answered early is handed to
:func:`wxbackend.wechat.background.track`, so that ``drain`` (tests, shutdown)
waits for it as for any background work.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from wxbackend.context import AppContext
from wxbackend.wechat import background

log = logging.getLogger("wxbackend.wechat.budget")


@dataclass
class _InFlight:
    deadline: float
    answer_early: Callable[[], None]
    task: asyncio.Task | None


@dataclass
class Budgets:
    ctx: AppContext
    waiting: dict[int, _InFlight] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None
    timer_due: float = 0.0
    tickets: itertools.count = field(default_factory=itertools.count)

    @classmethod
    def of(cls, ctx: AppContext) -> Budgets:
        return ctx.state(cls, lambda: cls(ctx))

    def start(self, seconds: float, answer_early: Callable[[], None]) -> int:
        """Watch the current request; ``answer_early`` is called if it is still running in ``seconds``."""
        ticket = next(self.tickets)
        deadline = time.monotonic() + seconds
        self.waiting[ticket] = _InFlight(deadline, answer_early, asyncio.current_task())
        if self.timer is None or deadline < self.timer_due:  # the budget may have been shortened
            self._arm(deadline)
        return ticket

    def _arm(self, due: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_due = due
        self.timer = asyncio.get_running_loop().call_later(max(0.0, due - time.monotonic()), self._sweep)

    def finish(self, ticket: int) -> bool:
        """True when the request finished within its budget (its answer is still to send)."""
        return self.waiting.pop(ticket, None) is not None

    def _sweep(self) -> None:
        self.timer = None
        now = time.monotonic()
        for ticket, flight in list(self.waiting.items()):
            if flight.deadline <= now:
                del self.waiting[ticket]
                self._answer_early(flight)
        if self.waiting:
            self._arm(min(f.deadline for f in self.waiting.values()))

    def _answer_early(self, flight: _InFlight) -> None:
        log.warning("chat handler over budget: answered success, reply follows as a "
                    "customer-service message")
        if flight.task is not None:
            background.track(self.ctx, flight.task, "over-budget chat handler")
        try:
            flight.answer_early()
        except Exception:  # the connection went away: nothing to answer
            log.exception("could not answer an over-budget callback")
