"""Base of the management web: cookie sessions, XSRF, HTML error pages.

A session whose password was reset by a higher admin may only reach the
password page (and log out, or log in as somebody else) until its holder has
chosen a new password.
"""

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
PASSWORD_PAGE = "/admin/account/password"  # noqa: S105 - a URL, not a secret
# Where a session that must change its password may still go (or leave by).
_BEFORE_PASSWORD_CHANGE = frozenset({PASSWORD_PAGE, "/admin/logout", "/admin/login"})


class AdminHandler(BaseHandler):
    # Set by prepare() for a session whose password a higher admin has reset.
    must_change_password = False
    # The live session's id (from its signed cookie), set by prepare(): what a grant
    # made for this browser session (e.g. unmasking.grant) is bound to.
    session_id: str | None = None

    async def prepare(self) -> None:
        super().prepare()
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "same-origin")
        sid = self.get_signed_cookie(SESSION_COOKIE, max_age_days=1)
        session = await admins.session_for(self.ctx, sid.decode(), self.client_ip) if sid else None
        if session is None:
            return
        self.current_user = session.actor
        self.session_id = sid.decode()
        self.must_change_password = session.must_change_password
        if session.must_change_password and self.request.path not in _BEFORE_PASSWORD_CHANGE:
            self.redirect(PASSWORD_PAGE)

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
        kwargs.setdefault("crumb_here", "")  # _crumbs.html: the page's own name after the path
        return super().render(template_name, **kwargs)

