"""Base handlers of the sandbox: WeChat-style API answers and control-API answers.

An API handler declares which app may call it (``app_kind``) and reads the
authorised app from ``self.app``; raising :class:`ApiError` anywhere answers
``{"errcode", "errmsg"}`` with HTTP 200, as WeChat does::

    class MenuGetHandler(ApiHandler):
        app_kind = "oa"

        def get(self) -> None:
            self.write_json({"menu": self.world.menus[self.app.appid]})

Every API call counts in ``/sandbox/stats`` and first consumes any fault
injected for its path (``POST /sandbox/faults``).
"""

from __future__ import annotations

import json
import secrets
from typing import Any, ClassVar

import tornado.web

from wxbackend.wechat.sandbox.world import ApiError, App, World


class ControlError(Exception):
    """A bad request to the sandbox's own /sandbox/* API."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class SandboxHandler(tornado.web.RequestHandler):
    def initialize(self, world: World) -> None:
        self.world = world

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(data, ensure_ascii=False))

    def json_body(self) -> dict[str, Any]:
        if not self.request.body:
            return {}
        try:
            body = json.loads(self.request.body)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise self.bad_body()
        return body

    def bad_body(self) -> Exception:
        return ControlError(400, "body must be a JSON object")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            # WeChat appends a request id that changes on every call.
            self.write_json({"errcode": exc.errcode,
                             "errmsg": f"{exc.errmsg} rid: {secrets.token_hex(4)}"})
        elif isinstance(exc, ControlError):
            self.write_json({"error": exc.message}, exc.status)
        else:
            self.write_json({"error": self._reason}, status_code)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if not isinstance(value, ApiError | ControlError):
            super().log_exception(typ, value, tb)


class ApiHandler(SandboxHandler):
    """A WeChat API endpoint; ``app_kind`` "oa"/"mp" requires that app's access token."""

    app_kind: ClassVar[str | None] = None
    app: App

    async def prepare(self) -> None:
        api = self.request.path
        self.world.calls[api] += 1
        await self.world.apply_fault(api)
        if self.app_kind is not None:
            self.app = self.world.authorize(self.get_query_argument("access_token", ""),
                                            self.app_kind, api)

    def bad_body(self) -> Exception:
        return ApiError(47001, "data format error")

    def ok(self, **extra: Any) -> None:
        self.write_json({"errcode": 0, "errmsg": "ok", **extra})


class ControlHandler(SandboxHandler):
    """The sandbox's own API under /sandbox/ (tests and the demo drive it)."""

    def require(self, body: dict[str, Any], name: str, kind: type = str) -> Any:
        value = body.get(name)
        if not isinstance(value, kind) or (kind is str and not value):
            raise ControlError(400, f"{name} is required")
        return value
