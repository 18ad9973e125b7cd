"""``serve``: the HTTP server with its embedded dependencies and demo data."""

from __future__ import annotations

import asyncio
import gc
import logging

from wxbackend.app import make_app
from wxbackend.runtime import open_runtime
from wxbackend.settings import Settings

log = logging.getLogger("wxbackend.server")


async def serve(settings: Settings, *, demo: bool = False) -> None:
    from wxbackend.cli import install_signal_handlers

    async with open_runtime(settings, owner=True) as rt:
        sandbox = demo_worker = None
        if demo:
            from wxbackend.services import seed
            from wxbackend.wechat.sandbox import start_for_demo

            login = await seed.ensure_demo(rt.ctx, settings.seed.demo_scale)
            print(f"demo admin: {login.username} / {login.password}  ({login.note})", flush=True)
            # Before make_app: it points settings.wechat's base URLs at itself.
            sandbox = start_for_demo(settings)
            from wxbackend.services import notify_demo

            demo_worker = await notify_demo.start(rt.ctx, settings)  # sample outbox + a worker
        # The tree snapshot takes seconds to load at city scale: pay it now,
        # not on the first request.
        from wxbackend.services import orgtree

        await orgtree.snapshot(rt.ctx)
        app = make_app(rt.ctx)
        # What startup loaded (modules, templates, the tree snapshot) lives as
        # long as the process: out of the collector's sight, a full collection
        # pauses a loaded server for a few ms rather than tens.
        gc.freeze()
        server = app.listen(settings.http.port, settings.http.host, xheaders=settings.http.xheaders,
                            max_body_size=settings.http.max_body_bytes)
        print(f"serving on http://{settings.http.host}:{settings.http.port}/admin/", flush=True)
        stopped = asyncio.Event()
        install_signal_handlers(stopped.set)
        await stopped.wait()
        log.info("shutting down")
        server.stop()
        await server.close_all_connections()
        if demo_worker is not None:
            await demo_worker.stop()
        if sandbox is not None:
            sandbox.stop()
