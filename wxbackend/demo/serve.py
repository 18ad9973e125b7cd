"""``serve --demo``: the demo city, the WeChat sandbox and a worker, before the app starts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from wxbackend.context import AppContext
from wxbackend.demo import notify_demo, seed
from wxbackend.settings import Settings
from wxbackend.wechat.sandbox import start_for_demo


async def prepare(ctx: AppContext, settings: Settings) -> Callable[[], Awaitable[None]]:
    """Seed the city (once), start the sandbox and the worker; returns their shutdown."""
    login = await seed.ensure_demo(ctx, settings.seed.demo_scale)
    print(f"demo admin: {login.username} / {login.password}  ({login.note})", flush=True)
    sandbox = start_for_demo(settings)  # points settings.wechat's base URLs at itself
    demo_worker = await notify_demo.start(ctx, settings)  # sample outbox + a worker

    async def stop() -> None:
        await demo_worker.stop()
        sandbox.stop()
    return stop
