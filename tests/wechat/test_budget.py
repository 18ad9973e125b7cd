"""The callback budget's one timer: every overdue request is answered early, once, in time."""

from __future__ import annotations

import asyncio
import time

from wxbackend.wechat import background
from wxbackend.wechat.budget import Budgets


async def test_overdue_requests_are_answered_early_and_the_rest_are_not(ctx):
    budgets = Budgets.of(ctx)
    answered: list[tuple[str, float]] = []
    started = time.monotonic()

    async def request(name: str, budget: float, work: float) -> bool:
        ticket = budgets.start(budget, lambda: answered.append((name, time.monotonic() - started)))
        await asyncio.sleep(work)
        return budgets.finish(ticket)

    in_time = await asyncio.gather(request("slow", 1.0, 1.3), request("quick", 1.0, 0.05),
                                   request("shortened", 0.2, 0.4))  # a shorter budget after a longer one
    assert in_time == [False, True, False]
    assert [name for name, _ in answered] == ["shortened", "slow"]
    shortened, slow = (at for _, at in answered)
    assert 0.2 <= shortened < 0.35 and 1.0 <= slow < 1.2
    assert budgets.waiting == {} and budgets.timer is None
    await background.drain(ctx)  # the overdue requests' tasks were tracked and have ended
