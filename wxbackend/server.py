"""``serve``: the HTTP server with its embedded dependencies (and, for the demo, its data)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from wxbackend.app import make_app
from wxbackend.capability import Registry
from wxbackend.context import AppContext
from wxbackend.runtime import install_signal_handlers, open_runtime
from wxbackend.services.orgs import orgtree
from wxbackend.settings import Settings

log = logging.getLogger("wxbackend.server")


@dataclass
class Prepared:
    """What a ``prepare`` step leaves to ``serve``: its shutdown, and what to print last."""

    stop: Callable[[], Awaitable[None]]
    # Printed once the server listens, as the last thing start-up prints (the demo's
    # logins and sandbox URL must not scroll away under start-up output).
    summary: str = ""


# Runs after the database is up and before the app is built (the demo seeds its city
# and starts its sandbox and worker there).
Prepare = Callable[[AppContext, Settings], Awaitable[Prepared]]


async def serve(settings: Settings, registry: Registry, *, prepare: Prepare | None = None) -> None:
    async with open_runtime(settings, registry, owner=True) as rt:
        # Before make_app: the demo points settings.wechat's base URLs at its sandbox.
        prepared = await prepare(rt.ctx, settings) if prepare is not None else None
        # The tree snapshot takes seconds to load at city scale: pay it now, not on the
        # first request.
        await orgtree.snapshot(rt.ctx)
        app = make_app(rt.ctx)
        # What startup loaded (modules, templates, the tree snapshot) lives as
        # long as the process: out of the collector's sight, a full collection
        # pauses a loaded server for a few ms rather than tens.
        gc.freeze()
        server = app.listen(settings.http.port, settings.http.host, xheaders=settings.http.xheaders,
                            max_body_size=settings.http.max_body_bytes)
        print(prepared.summary if prepared is not None and prepared.summary else
              f"serving on http://{settings.http.host}:{settings.http.port}/admin/", flush=True)
        stopped = asyncio.Event()
        install_signal_handlers(stopped.set)
        await stopped.wait()
        log.info("shutting down")
        server.stop()
        await server.close_all_connections()
        if prepared is not None:
            await prepared.stop()
