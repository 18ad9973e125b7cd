"""The running application's shared resources, built once per process.

Services take the context as their first argument (``ctx.db``, ``ctx.redis``,
``ctx.cipher``, ``ctx.clock``), so they run the same under the web server, a worker, the CLI
and the tests::

    ctx = await AppContext.connect(settings, mongodb_uri, redis_url)
    try:
        ...
    finally:
        await ctx.close()
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import redis.asyncio as aioredis
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from wxbackend.capability import Registry
from wxbackend.clock import Clock
from wxbackend.embedded import is_local_uri, mongo_uri_with_defaults
from wxbackend.fieldcrypto import FieldCipher
from wxbackend.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")


def mongo_client_options(settings: Settings, mongodb_uri: str) -> dict[str, Any]:
    """The driver's timeouts from ``[mongodb]`` (config/default.toml says why each is so).

    The ``embedded_*`` values when the server is the embedded SecantusDB (``uri`` empty) or
    on this machine, the production values otherwise. An option the URI sets itself wins::

        mongo_client_options(settings, "mongodb://127.0.0.1:27017/")["connectTimeoutMS"]  # 30000
    """
    mongodb = settings.mongodb
    prefix = "embedded_" if settings.embedded_mongo or is_local_uri(mongodb_uri) else ""
    options = {
        "serverSelectionTimeoutMS": mongodb.server_selection_timeout_ms,
        "connectTimeoutMS": getattr(mongodb, f"{prefix}connect_timeout_ms"),
        "socketTimeoutMS": getattr(mongodb, f"{prefix}socket_timeout_ms") or None,
        "heartbeatFrequencyMS": getattr(mongodb, f"{prefix}heartbeat_frequency_ms"),
        "maxIdleTimeMS": getattr(mongodb, f"{prefix}max_idle_time_ms") or None,
        "serverMonitoringMode": mongodb.server_monitoring_mode,
    }
    given = mongodb_uri.lower()
    return {key: value for key, value in options.items() if f"{key.lower()}=" not in given}


@dataclass
class AppContext:
    settings: Settings
    mongo: AsyncMongoClient
    db: AsyncDatabase
    redis: aioredis.Redis
    cipher: FieldCipher
    # The one clock every calendar rule reads (wxbackend/clock.py).
    clock: Clock
    # What the installed capabilities declare: jobs, chat routes, kinds, models ...
    registry: Registry
    # Per-process state that services own, one instance per class: see state().
    _state: dict[type, Any] = field(default_factory=dict)
    # Async callables that close() awaits first (e.g. the WeChat client's HTTP pool).
    on_close: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)

    @classmethod
    async def connect(cls, settings: Settings, mongodb_uri: str, redis_url: str,
                      *, database: str | None = None, event_listeners: list | None = None,
                      clock: Clock | None = None, registry: Registry | None = None) -> AppContext:
        """Connect to MongoDB and Redis; entry points pass the installed capabilities' registry."""
        mongo = AsyncMongoClient(mongo_uri_with_defaults(mongodb_uri), tz_aware=True,
                                 event_listeners=event_listeners or [],
                                 **mongo_client_options(settings, mongodb_uri))
        db = mongo[database or settings.mongodb.database]
        redis = aioredis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2,
                                  decode_responses=False)
        if clock is None:
            clock = Clock(timedelta(seconds=settings.clock.offset_seconds))
            if settings.clock.offset_seconds:
                log.warning("the clock runs %+.0f s off the system clock (WXB_CLOCK_OFFSET_SECONDS): "
                            "today is %s", settings.clock.offset_seconds, clock.today().isoformat())
        return cls(settings, mongo, db, redis, FieldCipher(settings.field_key_bytes()), clock,
                   registry or Registry((), settings))

    def state(self, kind: type[T], make: Callable[[], T] | None = None) -> T:
        """This process's one ``kind`` (``make()`` or ``kind()`` on first use): a capability's
        caches, pools and clients, typed and keyed by their class, so none can collide::

            cards = ctx.state(BranchCards).cards
            budgets = ctx.state(Budgets, lambda: Budgets(ctx))
        """
        found = self._state.get(kind)
        if found is None:
            found = self._state[kind] = (make or kind)()
        return found

    def replace_state(self, value: T) -> T:
        """Put ``value`` in place of the state of its class (a test's short TTL, a new client)."""
        self._state[type(value)] = value
        return value

    async def close(self) -> None:
        for hook in reversed(self.on_close):
            await hook()
        await self.redis.aclose()
        await self.mongo.close()
