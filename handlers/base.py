"""Base handlers: request ids, error rendering, dependency failures.

``DomainError`` raised by a service becomes the JSON error shape of the
architecture (``{"error": {"code", "message"}}``) or an error page; a down
database or Redis becomes 503 with a clear message, never a stack trace.
"""

from __future__ import annotations

import itertools
import logging
import os
from typing import Any

import msgspec
import redis.exceptions
import tornado.web
from pymongo.errors import ConnectionFailure, ExecutionTimeout, ServerSelectionTimeoutError

from handlers import ui
from wxbackend import logs, metrics
from wxbackend.context import AppContext
from wxbackend.errors import DomainError, TooManyRequests

# An ObjectId in a URL: as an api_route parameter, and as a Tornado capture group.
OBJECT_ID = "[0-9a-f]{24}"
PATH_ID = f"({OBJECT_ID})"

log = logging.getLogger("wxbackend.http")

DEPENDENCY_ERRORS: tuple[tuple[type[BaseException], str], ...] = (
    (ServerSelectionTimeoutError, "mongo"), (ConnectionFailure, "mongo"), (ExecutionTimeout, "mongo"),
    (redis.exceptions.ConnectionError, "redis"), (redis.exceptions.TimeoutError, "redis"),
)
UNAVAILABLE = {"code": "service_unavailable", "message": "服务暂时不可用，请稍后再试"}
JSON_TYPE = "application/json; charset=utf-8"


def json_bytes(data: Any) -> bytes:
    """Every JSON body we send: plain UTF-8 (Tornado's encoder writes ``\\uXXXX`` for each
    Chinese character), with ``</`` escaped as Tornado does, so a body never closes a script."""
    return msgspec.json.encode(data).replace(b"</", b"<\\/")


# Request ids: unique, not secret. A random prefix per process and a counter
# cost a tenth of uuid4 on every request.
_RID_PREFIX = os.urandom(8).hex()
_rid_counter = itertools.count()


def new_request_id() -> str:
    """32 hex characters, as a uuid4 would be."""
    return f"{_RID_PREFIX}{next(_rid_counter):016x}"


def dependency_of(exc: BaseException | None) -> str | None:
    for kind, name in DEPENDENCY_ERRORS:
        if isinstance(exc, kind):
            return name
    return None


class BaseHandler(tornado.web.RequestHandler):
    ctx: AppContext

    def initialize(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def prepare(self) -> Any:
        incoming = self.request.headers.get("X-Request-Id", "")
        rid = incoming if 8 <= len(incoming) <= 64 and incoming.isascii() else new_request_id()
        self.request_id = rid
        self._rid_token = logs.request_id.set(rid)
        self.set_header("X-Request-Id", rid)

    def on_finish(self) -> None:
        token = getattr(self, "_rid_token", None)
        if token is not None:
            logs.request_id.reset(token)

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        namespace.update(ui.helpers_for(self))
        return namespace

    def write(self, chunk: str | bytes | dict[str, Any]) -> None:
        # Tornado encodes a dict itself, \u-escaped; any handler's dict goes through ours.
        if isinstance(chunk, dict):
            self.set_header("Content-Type", JSON_TYPE)
            chunk = json_bytes(chunk)
        super().write(chunk)

    @property
    def client_ip(self) -> str:
        return self.request.remote_ip or ""

    def wants_json(self) -> bool:
        return True

    def error_body(self, status: int, exc: BaseException | None) -> dict[str, Any]:
        if isinstance(exc, DomainError):
            return exc.as_json()
        if dependency_of(exc):
            return {"error": UNAVAILABLE}
        if isinstance(exc, tornado.web.HTTPError) and "xsrf" in (exc.log_message or "").lower():
            return {"error": {"code": "xsrf_failed", "message": "页面已过期或来源不明，请刷新后重试"}}
        if isinstance(exc, tornado.web.HTTPError) and exc.log_message and status < 500:
            return {"error": {"code": _HTTP_CODES.get(status, "bad_request"),
                              "message": _HTTP_MESSAGES.get(status, "请求无效")}}
        return {"error": {"code": _HTTP_CODES.get(status, "internal_error"),
                          "message": _HTTP_MESSAGES.get(status, "服务器内部错误")}}

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, TooManyRequests):
            self.set_header("Retry-After", str(exc.retry_after))
        body = self.error_body(status_code, exc)
        if self.wants_json():
            self.set_header("Content-Type", JSON_TYPE)
            self.finish(json_bytes(body))
        else:
            self.render_error_page(status_code, body["error"])

    def render_error_page(self, status: int, error: dict[str, Any]) -> None:
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish(f"{status} {error['message']}\n")

    def _handle_request_exception(self, e: BaseException) -> None:
        # Map rule violations and dependency failures to their statuses before
        # Tornado logs them as server errors.
        if isinstance(e, DomainError):
            if not self._finished:
                self.send_error(e.status, exc_info=(type(e), e, e.__traceback__))
            return
        dependency = dependency_of(e)
        if dependency:
            metrics.DEPENDENCY_ERRORS.labels(dependency).inc()
            log.warning("%s unavailable: %s", dependency, e.__class__.__name__)
            if not self._finished:
                self.send_error(503, exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)


class JsonHandler(BaseHandler):
    """JSON endpoints: no XSRF cookie (callers authenticate otherwise)."""

    def check_xsrf_cookie(self) -> None:
        return None

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", JSON_TYPE)
        self.finish(json_bytes(data))


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
               429: "too_many_requests", 500: "internal_error", 503: "service_unavailable"}
_HTTP_MESSAGES = {400: "请求无效", 401: "请先登录", 403: "没有权限", 404: "找不到该页面",
                  405: "不支持该请求方法", 409: "请求冲突", 413: "请求内容过大",
                  429: "请求过于频繁", 500: "服务器内部错误", 503: "服务暂时不可用，请稍后再试"}


class NotFoundHandler(BaseHandler):
    """Paths no route matches: JSON for machines, a page for people."""

    def prepare(self) -> None:
        super().prepare()
        raise tornado.web.HTTPError(404)

    def check_xsrf_cookie(self) -> None:
        return None

    def wants_json(self) -> bool:
        return not self.request.path.startswith("/admin")
