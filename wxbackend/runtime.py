"""Starting and stopping what a process needs: database, Redis, context.

``serve`` starts the embedded servers when their URLs are unset and records
their addresses in ``<data dir>/embedded.json`` (mode 600: the Redis URL carries
its password) while it runs, so that other commands (``seed``,
``import-members``, ``worker``) reuse them instead of opening the same storage
twice::

    async with open_runtime(settings, installed.registry(settings)) as rt:
        await do_something(rt.ctx)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from models import ensure_indexes
from wxbackend.capability import Registry
from wxbackend.context import AppContext
from wxbackend.embedded import EmbeddedServers, ensure_dir
from wxbackend.settings import Settings

STATE_FILE = "embedded.json"


@dataclass
class Runtime:
    settings: Settings
    ctx: AppContext
    mongodb_uri: str
    redis_url: str
    servers: EmbeddedServers | None


def _running_embedded(data_dir: Path) -> dict[str, str] | None:
    path = data_dir / STATE_FILE
    try:
        state = json.loads(path.read_text())
        os.kill(state["pid"], 0)
    except (OSError, ValueError, KeyError):
        return None
    return state


@contextlib.asynccontextmanager
async def open_runtime(settings: Settings, registry: Registry, *,
                       owner: bool = False) -> AsyncIterator[Runtime]:
    """Connect to MongoDB and Redis, starting embedded ones where needed.

    ``owner`` (the ``serve`` command) publishes the embedded servers' addresses
    for the other commands while it runs.
    """
    data_dir = ensure_dir(settings.data_dir)
    mongodb_uri, redis_url = settings.mongodb.uri, settings.redis.url
    servers = None
    shared = None if owner else _running_embedded(data_dir)
    if shared:
        mongodb_uri = mongodb_uri or shared["mongodb_uri"]
        redis_url = redis_url or shared["redis_url"]
    if not mongodb_uri or not redis_url:
        servers = EmbeddedServers(data_dir, mongo=not mongodb_uri, redis=not redis_url,
                                  redis_password=settings.redis.embedded_password or None).start()
        mongodb_uri = mongodb_uri or servers.mongodb_uri
        redis_url = redis_url or servers.redis_url
    state_path = data_dir / STATE_FILE
    try:
        if owner and servers is not None:
            _write_private(state_path, json.dumps({"pid": os.getpid(), "mongodb_uri": mongodb_uri,
                                                   "redis_url": redis_url}))
        ctx = await AppContext.connect(settings, mongodb_uri, redis_url, registry=registry)
        try:
            await ensure_indexes(ctx.db, registry.models)
            yield Runtime(settings, ctx, mongodb_uri, redis_url, servers)
        finally:
            await ctx.close()
    finally:
        if owner and servers is not None:
            state_path.unlink(missing_ok=True)
        if servers is not None:
            servers.stop()


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read (the Redis URL carries the password)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file left by an older version keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def install_signal_handlers(stop: Callable[[], None]) -> None:
    """SIGTERM and Ctrl-C call ``stop`` (a long-running command then shuts down cleanly)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
