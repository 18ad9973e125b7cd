"""``GET /healthz`` for the load balancer and ``GET /metrics`` for Prometheus."""

from __future__ import annotations

import asyncio

from handlers.base import JsonHandler
from wxbackend import metrics


class HealthHandler(JsonHandler):
    async def get(self) -> None:
        mongo, redis = await asyncio.gather(self._mongo(), self._redis())
        body = {"mongo": mongo, "redis": redis}
        self.write_json(body, 200 if mongo == redis == "ok" else 503)

    async def _mongo(self) -> str:
        try:
            await asyncio.wait_for(self.ctx.db.command("ping"), timeout=2.5)
            return "ok"
        except Exception:
            return "down"

    async def _redis(self) -> str:
        try:
            await asyncio.wait_for(self.ctx.redis.ping(), timeout=2.5)
            return "ok"
        except Exception:
            return "down"


class MetricsHandler(JsonHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(metrics.render())


ROUTES = [
    (r"/healthz", HealthHandler),
    (r"/metrics", MetricsHandler),
]
