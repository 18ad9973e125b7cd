"""``GET /healthz`` for the load balancer and ``GET /metrics`` for Prometheus.

/metrics answers only clients in ``[http] metrics_networks`` (loopback by
default): its counters (requests and latencies per handler and status, dependency
failures, the process's own figures) tell an outsider about the platform's load and
weak spots, nothing a member or administrator needs.
The client is ``request.remote_ip``, which Tornado takes from X-Real-Ip /
X-Forwarded-For when the server runs with ``[http] xheaders``, as every client IP
of the app::

    WXB_HTTP_METRICS_NETWORKS="127.0.0.0/8,::1/128,10.20.0.5"   # loopback + Prometheus
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable

from handlers.base import JsonHandler
from wxbackend import metrics
from wxbackend.errors import Forbidden
from wxbackend.settings import Network, env_name, parse_networks

# How long /healthz waits for each dependency's answer (seconds).
CHECK_SECONDS = 2.5


class HealthHandler(JsonHandler):
    """200 while the dependencies serve, if slowly; 503 when one is down.

    ``mongo`` is "ok", "slow" (the ping took longer than CHECK_SECONDS but the driver's
    monitor still reaches the server: an index build or a busy embedded server, which
    requests wait out) or "down" (no usable server). A load balancer that took an instance
    out for slowness would only move its load onto the others, which share the database.
    """

    async def get(self) -> None:
        mongo, redis = await asyncio.gather(self._mongo(), self._redis())
        body = {"mongo": mongo, "redis": redis}
        self.write_json(body, 503 if "down" in (mongo, redis) else 200)

    async def _mongo(self) -> str:
        try:
            await asyncio.wait_for(self.ctx.db.command("ping"), timeout=CHECK_SECONDS)
            return "ok"
        except TimeoutError:
            # Unanswered, but the monitor's heartbeats have not failed: busy, not gone.
            return "slow" if self.ctx.mongo.topology_description.has_writable_server() else "down"
        except Exception:
            return "down"

    async def _redis(self) -> str:
        try:
            await asyncio.wait_for(self.ctx.redis.ping(), timeout=CHECK_SECONDS)
            return "ok"
        except Exception:
            return "down"


def ip_in_networks(ip: str, networks: Iterable[Network]) -> bool:
    """Whether ``ip`` lies in one of ``networks``; an unparseable ip never does."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    # A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; match them as IPv4.
    mapped = getattr(address, "ipv4_mapped", None)
    return any(address in net or (mapped is not None and mapped in net) for net in networks)


class MetricsHandler(JsonHandler):
    def get(self) -> None:
        allowed = parse_networks(self.ctx.settings.http.metrics_networks,
                                 env_name("http", "metrics_networks"))
        if not ip_in_networks(self.client_ip, allowed):
            raise Forbidden("metrics_forbidden", "监控指标仅对指定网络开放")
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(metrics.render())


ROUTES = [
    (r"/healthz", HealthHandler),
    (r"/metrics", MetricsHandler),
]
