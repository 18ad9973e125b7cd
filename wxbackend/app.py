"""The Tornado application: route table, settings, access log and metrics.

Like Tornado's blog demo, an ``Application`` subclass builds the routes and
receives its resources (the :class:`AppContext`) from the caller::

    app = make_app(ctx)
    server = app.listen(8000)
"""

from __future__ import annotations

import logging

import tornado.web

from wxbackend import metrics
from wxbackend.context import AppContext
from wxbackend.settings import ROOT

access_log = logging.getLogger("wxbackend.access")

# Handler modules whose ROUTES make up the application; a capability adds its module here.
# Tornado tries the routes in order: the official-account callback, by far the
# busiest, comes first.
ROUTE_MODULES = [
    "handlers.wechat_oa",
    "handlers.health",
    "handlers.admin",
    "handlers.admin_import",
    "handlers.admin_binding",
    "handlers.api.openapi",
    "handlers.api.auth",
    "handlers.api.me",
    "handlers.api.meeting_social",
    "handlers.admin_compliance",
    "handlers.api.meetings",
    "handlers.admin_meetings",
    "handlers.admin_notify",
    "handlers.api.notifications",
]


def _routes(ctx: AppContext) -> list[tuple]:
    import importlib

    table = []
    for name in ROUTE_MODULES:
        for pattern, handler, *rest in importlib.import_module(name).ROUTES:
            kwargs = {"ctx": ctx, **(rest[0] if rest else {})}
            table.append((pattern, handler, kwargs))
    return table


class Application(tornado.web.Application):
    def __init__(self, ctx: AppContext) -> None:
        from handlers.base import NotFoundHandler

        self.ctx = ctx
        super().__init__(
            _routes(ctx),
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

