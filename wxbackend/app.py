"""The Tornado application: route table, settings, access log and metrics.

Like Tornado's blog demo, an ``Application`` subclass builds the routes and
receives its resources (the :class:`AppContext`) from the caller::

    app = make_app(ctx)
    server = app.listen(8000)
"""

from __future__ import annotations

import logging

import tornado.web

from handlers import routes
from handlers.base import NotFoundHandler
from wxbackend import metrics
from wxbackend.context import AppContext
from wxbackend.settings import ROOT

access_log = logging.getLogger("wxbackend.access")

def _bind(entries: list[tuple], ctx: AppContext) -> list[tuple]:
    return [(pattern, handler, {"ctx": ctx, **(rest[0] if rest else {})})
            for pattern, handler, *rest in entries]


class Application(tornado.web.Application):
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        # The routes of the platform and of the installed capabilities (the OpenAPI document's too).
        self.declared_routes = routes.table(c.name for c in ctx.registry.capabilities)
        super().__init__(
            _bind(self.declared_routes, ctx),
            template_path=str(ROOT / "templates"),
            static_path=str(ROOT / "static"),
            static_url_prefix="/static/",
            cookie_secret=ctx.settings.security.secret_key,
            xsrf_cookies=True,
            xsrf_cookie_kwargs={"httponly": True, "secure": True, "samesite": "Strict"},
            login_url="/admin/login",
            compiled_template_cache=True,
            autoescape="xhtml_escape",
            default_handler_class=NotFoundHandler,
            default_handler_args={"ctx": ctx},
        )

    def log_request(self, handler: tornado.web.RequestHandler) -> None:
        status = handler.get_status()
        elapsed = handler.request.request_time()
        name = type(handler).__name__
        metrics.request_answered(name, handler.request.method or "", status, elapsed)
        level = logging.INFO if status < 500 else logging.ERROR
        if access_log.isEnabledFor(level):
            access_log.log(level, "%s %s %d", handler.request.method, handler.request.path, status,
                           extra={"fields": {"status": status, "ms": round(elapsed * 1000, 1),
                                             "ip": handler.request.remote_ip}})


def make_app(ctx: AppContext) -> Application:
    return Application(ctx)

