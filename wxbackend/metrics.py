"""Prometheus metrics of the HTTP server, served at ``GET /metrics``."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter("wxb_http_requests_total", "HTTP requests answered",
                        ["handler", "method", "status"], registry=REGISTRY)
HTTP_LATENCY = Histogram("wxb_http_request_duration_seconds", "Time to answer a request",
                         ["handler"], registry=REGISTRY,
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
DEPENDENCY_ERRORS = Counter("wxb_dependency_errors_total", "Requests failed by a down dependency",
                            ["dependency"], registry=REGISTRY)


# The labelled children by label values: ``labels()`` validates and locks on every call.
_children: dict[tuple[str, ...], tuple[Any, Any]] = {}


def request_answered(handler: str, method: str, status: int, seconds: float) -> None:
    """Count one answered request and its time."""
    key = (handler, method, str(status))
    children = _children.get(key)
    if children is None:
        children = _children[key] = (HTTP_REQUESTS.labels(*key), HTTP_LATENCY.labels(handler))
    children[0].inc()
    children[1].observe(seconds)


def render() -> bytes:
    return generate_latest(REGISTRY)
