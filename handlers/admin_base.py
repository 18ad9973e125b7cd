"""Base of the management web: cookie sessions, XSRF, HTML error pages."""

from __future__ import annotations

from typing import Any

import tornado.escape
import tornado.web
from bson import ObjectId

from handlers.base import BaseHandler
from wxbackend.errors import Forbidden
from wxbackend.services.accounts import admins
from wxbackend.services.accounts.access import Actor

SESSION_COOKIE = "wxb_session"


class AdminHandler(BaseHandler):
    async def prepare(self) -> None:
        super().prepare()
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "same-origin")
        sid = self.get_signed_cookie(SESSION_COOKIE, max_age_days=1)
        if sid:
            self.current_user = await admins.actor_for_session(self.ctx, sid.decode(), self.client_ip)

    def get_current_user(self) -> Actor | None:
        # Only reached when prepare() did not run (e.g. the XSRF check failed
        # first): such a request is treated as anonymous.
        return None

    @property
    def actor(self) -> Actor:
        if self.current_user is None:
            raise tornado.web.HTTPError(401)
        return self.current_user

    def wants_json(self) -> bool:
        return False

    def render_error_page(self, status: int, error: dict[str, Any]) -> None:
        if status == 401:
            self.redirect(self.get_login_url() + "?next=" + tornado.escape.url_escape(self.request.uri))
            return
        self.render("admin/error.html", status=status, error=error)

    def start_session(self, actor: Actor, sid: str) -> None:
        self.set_signed_cookie(SESSION_COOKIE, sid, expires_days=None, httponly=True,
                               secure=True, samesite="Lax")

    def home_org(self) -> ObjectId:
        actor = self.actor
        if not actor.roles:
            raise Forbidden("no_role", "您的账号没有任何角色，请联系管理员")
        return actor.roles[0].org_id

    def form(self, name: str, default: str = "") -> str:
        return self.get_body_argument(name, default).strip()

    def render(self, template_name: str, **kwargs: Any) -> Any:
        kwargs.setdefault("actor", self.current_user)
        kwargs.setdefault("flash", self.get_query_argument("msg", ""))
        return super().render(template_name, **kwargs)

