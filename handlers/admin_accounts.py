"""Account pages of the management web: one's own password, and the admins a
higher admin manages (password reset, deactivation, reactivation).

Rules and scope live in ``services.accounts.admin_users``; these handlers
parse the form and render. A reset password is shown once, on the answer to
the POST that made it (pages are ``no-store``), never in a URL.
"""

from __future__ import annotations

import tornado.escape
import tornado.web

from handlers.admin_base import PASSWORD_PAGE, AdminHandler
from handlers.base import PATH_ID
from wxbackend.errors import DomainError, TooManyRequests
from wxbackend.services import orgs
from wxbackend.services.accounts import admin_users


class PasswordHandler(AdminHandler):
    """GET/POST /admin/account/password: change one's own password."""

    @tornado.web.authenticated
    def get(self) -> None:
        self.render("admin/account_password.html", error=None, forced=self.must_change_password)

    @tornado.web.authenticated
    async def post(self) -> None:
        try:
            sid = await admin_users.change_own_password(
                self.ctx, self.actor, self.get_body_argument("current", ""),
                self.get_body_argument("new", ""), self.get_body_argument("confirm", ""))
        except DomainError as exc:
            if exc.status == 401:
                raise
            self.set_status(exc.status)
            if isinstance(exc, TooManyRequests):
                self.set_header("Retry-After", str(exc.retry_after))
            self.render("admin/account_password.html", error=exc.as_json()["error"],
                        forced=self.must_change_password)
            return
        # The change ended every session of this user, this one too: continue on a fresh one.
        self.start_session(self.actor, sid)
        self.redirect("/admin/?msg=" + tornado.escape.url_escape("密码已修改，其他设备上的登录已退出"))


class UsersHandler(AdminHandler):
    """GET /admin/users?org=<id>: the admins of one organisation, and its child organisations."""

    @tornado.web.authenticated
    async def get(self) -> None:
        org = await orgs.view(self.ctx, self.actor, self.get_query_argument("org", "") or self.home_org())
        users = await admin_users.at_org(self.ctx, self.actor, org)
        self.render("admin/users.html", org=org, users=users, crumbs=await orgs.breadcrumbs(self.ctx, org),
                    children=await orgs.children(self.ctx, self.actor, org))


class UserHandler(AdminHandler):
    """GET /admin/users/<id>: one admin the actor manages, with the actions."""

    @tornado.web.authenticated
    async def get(self, user_id: str) -> None:
        self.render("admin/users_detail.html", user=await admin_users.view(self.ctx, self.actor, user_id))


class UserActionHandler(AdminHandler):
    """POST /admin/users/<id>/(reset|deactivate|reactivate)."""

    @tornado.web.authenticated
    async def post(self, user_id: str, action: str) -> None:
        ctx, actor = self.ctx, self.actor
        if action == "reset":
            password = await admin_users.reset_password(ctx, actor, user_id, self.get_body_argument("password", ""))
            self.render("admin/users_reset.html", user=await admin_users.view(ctx, actor, user_id),
                        password=password)
            return
        await admin_users.set_active(ctx, actor, user_id, active=action == "reactivate")
        message = "已重新启用" if action == "reactivate" else "已停用，该账号的登录已全部退出"
        self.redirect(f"/admin/users/{user_id}?msg=" + tornado.escape.url_escape(message))


ROUTES = [
    (PASSWORD_PAGE, PasswordHandler),
    (r"/admin/users", UsersHandler),
    (rf"/admin/users/{PATH_ID}", UserHandler),
    (rf"/admin/users/{PATH_ID}/(reset|deactivate|reactivate)", UserActionHandler),
]
