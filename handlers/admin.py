"""Management web pages: login, organisations, members, audit log."""

from __future__ import annotations

from typing import Any

import tornado.web
from bson import ObjectId

from handlers.admin_base import SESSION_COOKIE, AdminHandler
from handlers.admin_compliance import compliance_panel
from handlers.base import PATH_ID
from models.enums import MEMBER_STATES, ORG_PARENT_TYPES
from wxbackend.errors import DomainError, InvalidInput, TooManyRequests
from wxbackend.services import orgs
from wxbackend.services.accounts import admins, audit
from wxbackend.services.orgs import lookups, members, orgtree, unmasking

MEMBER_FORM_FIELDS = ("name", "gender", "ethnicity", "birth_date", "education", "id_card", "phone",
                      "party_status", "joined_on", "full_on", "category")
# Left blank on the edit form (kept unless re-entered): the birth date is digits of the ID card.
MASKED_FORM_FIELDS = ("id_card", "phone", "birth_date")
# A reload of the clear view, or a grant of another session: the masked page, and why.
SHOWN_ONCE = "完整信息只显示一次；如需再次查看，请重新点击“查看完整信息”（将再次记入审计日志）"


class LoginHandler(AdminHandler):
    def get(self) -> None:
        if self.current_user:
            self.redirect("/admin/")
            return
        self.render("admin/login.html", error=None, username="")

    async def post(self) -> None:
        username = self.form("username")
        try:
            actor, sid = await admins.login(self.ctx, username, self.get_body_argument("password", ""),
                                            self.client_ip)
        except DomainError as exc:
            self.set_status(exc.status)
            if isinstance(exc, TooManyRequests):
                self.set_header("Retry-After", str(exc.retry_after))
            self.render("admin/login.html", error=exc.as_json()["error"], username=username)
            return
        self.start_session(actor, sid)
        target = self.get_query_argument("next", "/admin/")
        self.redirect(target if target.startswith("/admin/") else "/admin/")


class LogoutHandler(AdminHandler):
    async def post(self) -> None:
        sid = self.get_signed_cookie(SESSION_COOKIE, max_age_days=1)
        if sid:
            await admins.close_session(self.ctx, sid.decode())
        self.clear_cookie(SESSION_COOKIE)
        self.redirect("/admin/login")


class HomeHandler(AdminHandler):
    @tornado.web.authenticated
    def get(self) -> None:
        self.redirect(f"/admin/orgs/{self.home_org()}")


class OrgHandler(AdminHandler):
    @tornado.web.authenticated
    async def get(self, org_id: str) -> None:
        org = await orgs.view(self.ctx, self.actor, org_id)
        children = await orgs.children(self.ctx, self.actor, org)
        direct: list[dict[str, Any]] = []
        if org["member_count"] and self.actor.can("member.view", org["org_ancestors"]):
            direct, _ = await members.page(self.ctx, self.actor, org["_id"], None, org=org)
        tree = await orgtree.snapshot(self.ctx)
        self.render("admin/org.html", org=org, children=children, org_name=tree.name,
                    crumbs=await orgs.breadcrumbs(self.ctx, org),
                    members=[members.present(self.ctx, m) for m in direct if m["org_id"] == org["_id"]],
                    term_end=orgs.term_end(org), overdue=orgs.term_overdue(org, self.ctx.clock.today()),
                    child_types=[t for t, parents in ORG_PARENT_TYPES.items() if org["type"] in parents],
                    compliance=await compliance_panel(self.ctx, self.actor, org))


class OrgActionHandler(AdminHandler):
    """POST /admin/orgs/<id>/<action>: one small form each."""

    @tornado.web.authenticated
    async def post(self, org_id: str, action: str) -> None:
        oid = orgs.parse_id(org_id)
        actor, ctx = self.actor, self.ctx
        target = oid
        if action == "rename":
            await orgs.rename(ctx, actor, oid, self.form("name"))
        elif action == "details":
            years = self.form("term_years")
            await orgs.update_details(ctx, actor, oid, term_start=self.form("term_start"),
                                      term_years=int(years) if years.isdigit() else None,
                                      category=self.form("category") or None)
        elif action == "children":
            child = await orgs.create(ctx, actor, oid, name=self.form("name"),
                                      org_type=self.form("type"), category=self.form("category"),
                                      term_start=self.form("term_start") or None)
            target = child["_id"]
        elif action == "move":
            parent = await orgs.by_code(ctx, self.form("parent_code"))
            await orgs.move(ctx, actor, oid, parent["_id"])
        elif action == "dissolve":
            org = await orgs.dissolve(ctx, actor, oid)
            target = org["parent_id"]
        elif action == "upgrade":
            await orgs.upgrade(ctx, actor, oid, self.form("type"))
        elif action == "leadership":
            secretary = self.form("secretary_id")
            committee = [(members.parse_id(m), self.get_body_argument(f"duty_{m}", "委员"))
                         for m in self.get_body_arguments("committee_ids")]
            await orgs.set_leadership(ctx, actor, oid, committee=committee,
                                      secretary_id=members.parse_id(secretary) if secretary else None)
        else:
            raise tornado.web.HTTPError(404)
        self.redirect(f"/admin/orgs/{target}?msg=" + tornado.escape.url_escape("已保存"))





class OrgMembersHandler(AdminHandler):
    """The members of a subtree in tree order, or those whose name starts with ``q``,
    paged both ways by keyset cursors. A search by full ID-card number or phone is a
    POST: the number stays out of URLs (proxy logs, history), and a link on another
    site cannot spend the admin's lookups or write their audit log."""

    @tornado.web.authenticated
    async def get(self, org_id: str) -> None:
        org = await orgs.view(self.ctx, self.actor, org_id)
        query = self.get_query_argument("q", "").strip()
        if query and lookups.exact_query(query):
            raise InvalidInput("lookup_by_post", "按身份证号码或手机号码查找，请使用页面上的搜索框")
        cursors = {"after": self.get_query_argument("cursor", None),
                   "before": self.get_query_argument("before", None)}
        if query:
            found = await members.search_names(self.ctx, self.actor, org, query, **cursors)
        else:
            found = await members.browse(self.ctx, self.actor, org, **cursors)
        await self._render(org, found, query=query)

    @tornado.web.authenticated
    async def post(self, org_id: str) -> None:
        org = await orgs.view(self.ctx, self.actor, org_id)
        query = self.form("q")
        exact = lookups.exact_query(query)
        if exact is None:  # a name: an ordinary GET, which pages and bookmarks
            search = "?q=" + tornado.escape.url_escape(query) if query else ""
            self.redirect(f"/admin/orgs/{org['_id']}/members{search}")
            return
        rows = await members.search(self.ctx, self.actor, org["_id"], query, org=org)
        await self._render(org, members.MemberPage(rows), exact=exact[0])

    async def _render(self, org: dict[str, Any], found: members.MemberPage, *, query: str = "",
                      exact: str | None = None) -> None:
        tree = await orgtree.snapshot(self.ctx)
        self.render("admin/members.html", org=org, query=query, exact=exact, page=found,
                    rows=[members.present(self.ctx, m) for m in found.rows], org_name=tree.name,
                    crumbs=[*await orgs.breadcrumbs(self.ctx, org), org])


class MemberNewHandler(AdminHandler):
    @tornado.web.authenticated
    async def get(self, org_id: str) -> None:
        org = await orgs.view(self.ctx, self.actor, org_id)
        self.actor.require("member.edit", org["org_ancestors"])  # no form for who may not send it
        self.render("admin/member_form.html", org=org, member=None, values={}, errors={})

    @tornado.web.authenticated
    async def post(self, org_id: str) -> None:
        org = await orgs.view(self.ctx, self.actor, org_id)
        values = {f: self.form(f) for f in MEMBER_FORM_FIELDS}
        try:
            member = await members.create(self.ctx, self.actor, org["_id"], values)
        except InvalidInput as exc:
            self.set_status(400)
            self.render("admin/member_form.html", org=org, member=None, values=values,
                        errors=_field_errors(exc))
            return
        self.redirect(f"/admin/members/{member['_id']}?msg=" + tornado.escape.url_escape("已新增"))


def _field_errors(exc: InvalidInput) -> dict[str, str]:
    if isinstance(exc.details, list):
        return {e["field"]: e["message"] for e in exc.details}
    return {"_": exc.message}


class MemberHandler(AdminHandler):
    """A member, masked; clear once after 查看完整信息 (``?shown=`` the grant its POST made)."""

    @tornado.web.authenticated
    async def get(self, member_id: str) -> None:
        member = await members.get_visible(self.ctx, self.actor, member_id)
        token = self.get_query_argument("shown", "")
        clear = await unmasking.redeem(self.ctx, self.actor, member, self.session_id, token) if token else None
        org = await orgs.get(self.ctx, member["org_id"])
        self.render("admin/member.html", member=members.present(self.ctx, member), org=org,
                    unmasked=clear, states=MEMBER_STATES, crumbs=[*await orgs.breadcrumbs(self.ctx, org), org],
                    flash=SHOWN_ONCE if token and clear is None else self.get_query_argument("msg", ""))


class MemberUnmaskHandler(AdminHandler):
    """POST, not GET: showing clear personal data is an audited action. It then redirects
    (303) to the member's page, which shows the numbers once: reloading that page does not
    post again, and the clear view is reachable only through this audited POST."""

    @tornado.web.authenticated
    async def post(self, member_id: str) -> None:
        if self.session_id is None:  # never so once authenticated; keeps the type honest
            raise tornado.web.HTTPError(401)
        token = await unmasking.grant(self.ctx, self.actor, member_id, self.session_id)
        self.redirect(f"/admin/members/{member_id}?shown={token}", status=303)


class MemberEditHandler(AdminHandler):
    """The form shows the ID-card number and phone masked and keeps them unless
    re-entered: opening it (a GET any link can trigger) reveals and records nothing."""

    @tornado.web.authenticated
    async def get(self, member_id: str) -> None:
        member = await members.get_visible(self.ctx, self.actor, member_id)
        self.actor.require("member.edit", member["org_ancestors"])
        values = {f: member.get(f) or "" for f in MEMBER_FORM_FIELDS if f not in MASKED_FORM_FIELDS}
        org = await orgs.get(self.ctx, member["org_id"])
        self.render("admin/member_form.html", org=org, member=members.present(self.ctx, member),
                    values=values, errors={})

    @tornado.web.authenticated
    async def post(self, member_id: str) -> None:
        member = await members.get_visible(self.ctx, self.actor, member_id)
        values = {f: self.form(f) for f in MEMBER_FORM_FIELDS}
        try:
            await members.update(self.ctx, self.actor, member["_id"], values,
                                 clear_phone=self.form("clear_phone") == "1")
        except InvalidInput as exc:
            org = await orgs.get(self.ctx, member["org_id"])
            self.set_status(400)
            self.render("admin/member_form.html", org=org, member=members.present(self.ctx, member),
                        values=values, errors=_field_errors(exc))
            return
        self.redirect(f"/admin/members/{member_id}?msg=" + tornado.escape.url_escape("已保存"))


class MemberStateHandler(AdminHandler):
    @tornado.web.authenticated
    async def post(self, member_id: str) -> None:
        await members.set_state(self.ctx, self.actor, members.parse_id(member_id), self.form("state"))
        self.redirect(f"/admin/members/{member_id}?msg=" + tornado.escape.url_escape("已保存"))


class AuditHandler(AdminHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        org_arg = self.get_query_argument("org", "")
        org = await orgs.view(self.ctx, self.actor, org_arg or self.home_org())
        days_arg = self.get_query_argument("days", "7")
        days = int(days_arg) if days_arg.isdigit() else 0
        before_arg = self.get_query_argument("before", "")
        before = ObjectId(before_arg) if ObjectId.is_valid(before_arg) else None
        entries = await audit.page(self.ctx, self.actor, org["_id"], days=days, before=before)
        self.render("admin/audit.html", org=org, entries=entries, days=days,
                    next_before=entries[-1].id if len(entries) == audit.PAGE_SIZE else None)


ROUTES = [
    (r"/admin/login", LoginHandler),
    (r"/admin/logout", LogoutHandler),
    (r"/admin/?", HomeHandler),
    (rf"/admin/orgs/{PATH_ID}", OrgHandler),
    (rf"/admin/orgs/{PATH_ID}/(rename|details|children|move|dissolve|upgrade|leadership)", OrgActionHandler),
    (rf"/admin/orgs/{PATH_ID}/members", OrgMembersHandler),
    (rf"/admin/orgs/{PATH_ID}/members/new", MemberNewHandler),
    (rf"/admin/members/{PATH_ID}", MemberHandler),
    (rf"/admin/members/{PATH_ID}/unmask", MemberUnmaskHandler),
    (rf"/admin/members/{PATH_ID}/edit", MemberEditHandler),
    (rf"/admin/members/{PATH_ID}/state", MemberStateHandler),
    (r"/admin/audit", AuditHandler),
]
