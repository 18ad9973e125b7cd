"""Management web: 三会一课 compliance, the work ledger (工作台账) and vote management.

Pages (``meeting.view`` to look, ``meeting.manage`` to act; the services check)::

    /admin/orgs/<org>/compliance?month=2026-03     a branch's months, or a committee's
                                                   compliant / non-compliant branches, with
                                                   two charts (rate per child organisation,
                                                   the last 12 months' rate)
    /admin/orgs/<org>/ledger?month=2026-03         a branch's meetings of the month
    /admin/orgs/<org>/ledger/2026-03.xlsx          the same, as an Excel workbook
    /admin/meetings/<id>/ledger                    one entry: attendance, minutes,
                                                   materials, comments (hide), votes
    /admin/meetings/<id>/votes                     create, close, results
    POST /admin/votes/<id>/close, /admin/comments/<id>/hide
    /admin/members/<id>/attendance?year=2026       one member's year

:func:`compliance_panel` gives the organisation page its panel.

The charts are Apache ECharts, served from our own static path
(``static/vendor/echarts/``), drawn by ``static/compliance-charts.js`` from a
``<script type="application/json">`` block: the page carries no inline script.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import tornado.escape
import tornado.web

from handlers.admin_base import AdminHandler
from handlers.base import OBJECT_ID
from models.enums import MEETING_TYPES
from wxbackend.context import AppContext
from wxbackend.errors import InvalidInput
from wxbackend.services import meetings, orgs
from wxbackend.services.accounts.access import Actor
from wxbackend.services.meetings import comments, compliance, ledger, votes

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


async def compliance_panel(ctx: AppContext, actor: Actor, org: dict[str, Any]) -> dict[str, Any] | None:
    """What the organisation page's compliance panel shows: this month and the last."""
    if not actor.can("meeting.view", org["org_ancestors"]) or org["type"] == "group":
        return None
    this = ctx.clock.month()
    last = compliance.shift_month(this, -1)
    if org["type"] == "branch":
        return {"kind": "branch", "this": await compliance.branch_status(ctx, actor, org["_id"], this),
                "last": await compliance.branch_status(ctx, actor, org["_id"], last)}
    return {"kind": "committee",
            "this": await compliance.committee_summary(ctx, actor, org["_id"], this),
            "last": await compliance.committee_summary(ctx, actor, org["_id"], last)}


class MonthMixin(AdminHandler):
    def month_arg(self) -> str:
        raw = self.get_query_argument("month", "") or self.ctx.clock.month()
        return compliance.parse_month(raw)

    def render(self, template_name: str, **kwargs: Any) -> Any:
        kwargs.setdefault("types", MEETING_TYPES)
        kwargs.setdefault("shift", compliance.shift_month)
        kwargs.setdefault("percent", percent)
        return super().render(template_name, **kwargs)


async def _crumbs(ctx: AppContext, org: dict[str, Any]) -> list[dict[str, Any]]:
    """The path down to the organisation, itself included (these pages hang below it)."""
    return [*await orgs.breadcrumbs(ctx, org), org]


def percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate:.0%}"


def _points(rate: float | None) -> float | None:
    return None if rate is None else round(rate * 100, 1)


def chart_data(summary: compliance.CommitteeSummary, trend: list[compliance.TrendPoint]) -> dict[str, Any]:
    """What ``static/compliance-charts.js`` draws (rates in percent, None where no branch)."""
    return {
        "month": summary.month, "in_progress": summary.in_progress,
        "suborgs": [{"name": r.org["name"], "rate": _points(r.rate), "compliant": r.compliant,
                     "branches": r.branches} for r in summary.children],
        "trend": [{"month": p.month, "rate": None if p.phase == compliance.FUTURE else _points(p.rate),
                   "compliant": p.compliant, "branches": p.branches,
                   "in_progress": p.phase == compliance.RUNNING} for p in trend],
    }


class ComplianceHandler(MonthMixin):
    @tornado.web.authenticated
    async def get(self, org_id: str) -> None:
        org = await orgs.view(self.ctx, self.actor, org_id)
        month = self.month_arg()
        crumbs = await _crumbs(self.ctx, org)
        if org["type"] == "branch":
            year = await compliance.branch_year(self.ctx, self.actor, org["_id"], month)
            self.render("admin/compliance_branch.html", org=org, month=month, crumbs=crumbs,
                        status=year[-1], year=list(reversed(year)))
            return
        summary = await compliance.committee_summary(self.ctx, self.actor, org["_id"], month)
        trend = await compliance.committee_trend(self.ctx, self.actor, org["_id"], month)
        self.render("admin/compliance.html", org=org, month=month, crumbs=crumbs, summary=summary,
                    trend=trend, chart_json=tornado.escape.json_encode(chart_data(summary, trend)))


class LedgerHandler(MonthMixin):
    @tornado.web.authenticated
    async def get(self, org_id: str) -> None:
        org = await orgs.view(self.ctx, self.actor, org_id)
        month = self.month_arg()
        if org["type"] != "branch":  # committees reach a branch's ledger through their branches
            self.redirect(f"/admin/orgs/{org['_id']}/compliance?month={month}")
            return
        book = await ledger.month(self.ctx, self.actor, org["_id"], month)
        self.render("admin/ledger.html", book=book, org=org, month=month,
                    crumbs=await _crumbs(self.ctx, org), absent=ledger.absent,
                    type_label=ledger.type_label, status_label=ledger.status_label,
                    minutes=meetings.current_minutes)


class LedgerExportHandler(AdminHandler):
    @tornado.web.authenticated
    async def get(self, org_id: str, month: str) -> None:
        name, data = await ledger.export_xlsx(self.ctx, self.actor, org_id, month)
        self.set_header("Content-Type", XLSX)
        self.set_header("Content-Disposition", f"attachment; filename*=UTF-8''{quote(name)}")
        self.finish(data)


class LedgerEntryHandler(MonthMixin):
    @tornado.web.authenticated
    async def get(self, meeting_id: str) -> None:
        item = await ledger.entry(self.ctx, self.actor, meeting_id)
        org = await orgs.get(self.ctx, item.meeting["org_id"])
        self.render("admin/ledger_entry.html", item=item, m=item.meeting, org=org,
                    crumbs=await _crumbs(self.ctx, org), absent=ledger.absent,
                    type_label=ledger.type_label, status_label=ledger.status_label,
                    how_labels=ledger.HOW_LABELS, results=votes.results)


class CommentHideHandler(AdminHandler):
    @tornado.web.authenticated
    async def post(self, comment_id: str) -> None:
        hidden = await comments.hide(self.ctx, self.actor, comment_id, self.form("reason"))
        self.redirect(f"/admin/meetings/{hidden['meeting_id']}/ledger?msg="
                      + tornado.escape.url_escape("已隐藏") + "#comments")


class VotesHandler(MonthMixin):
    @tornado.web.authenticated
    async def get(self, meeting_id: str) -> None:
        await self.show(meeting_id)

    async def show(self, meeting_id: str, error: str = "", values: dict[str, Any] | None = None) -> None:
        meeting = await meetings.view(self.ctx, self.actor, meeting_id)
        found = await votes.of_meeting_for_admin(self.ctx, self.actor, meeting["_id"])
        named = {v["_id"]: await votes.named_ballots(self.ctx, self.actor, v) for v in found}
        org = await orgs.get(self.ctx, meeting["org_id"])
        self.render("admin/votes.html", m=meeting, org=org, votes=found, named=named, error=error,
                    values=values or {}, results=votes.results, crumbs=await _crumbs(self.ctx, org),
                    votable=meeting["status"] in votes.VOTABLE_MEETING)

    @tornado.web.authenticated
    async def post(self, meeting_id: str) -> None:
        values = {"title": self.form("title"), "options": self.form("options"),
                  "multiple": self.form("multiple"), "anonymous": self.form("anonymous")}
        try:
            await votes.create(self.ctx, self.actor, meeting_id, values["title"],
                               values["options"].splitlines(), multiple=bool(values["multiple"]),
                               anonymous=bool(values["anonymous"]))
        except InvalidInput as exc:
            self.set_status(400)
            await self.show(meeting_id, exc.message, values)
            return
        self.redirect(f"/admin/meetings/{meeting_id}/votes?msg=" + tornado.escape.url_escape("已发起表决"))


class VoteCloseHandler(AdminHandler):
    @tornado.web.authenticated
    async def post(self, vote_id: str) -> None:
        vote = await votes.close(self.ctx, self.actor, vote_id)
        self.redirect(f"/admin/meetings/{vote['meeting_id']}/votes?msg=" + tornado.escape.url_escape("表决已结束"))


class MemberAttendanceHandler(MonthMixin):
    @tornado.web.authenticated
    async def get(self, member_id: str) -> None:
        raw = self.get_query_argument("year", "")
        year = int(raw) if raw.isdigit() and 2000 <= int(raw) <= 2100 else int(self.ctx.clock.month()[:4])
        sheet = await ledger.member_year(self.ctx, self.actor, member_id, year)
        org = await orgs.get(self.ctx, sheet.member["org_id"])
        self.render("admin/ledger_member.html", sheet=sheet, org=org, labels=ledger.ATTENDANCE_LABELS,
                    type_label=ledger.type_label, crumbs=await _crumbs(self.ctx, org))


ROUTES = [
    (rf"/admin/orgs/({OBJECT_ID})/compliance", ComplianceHandler),
    (rf"/admin/orgs/({OBJECT_ID})/ledger", LedgerHandler),
    (rf"/admin/orgs/({OBJECT_ID})/ledger/(\d{{4}}-\d{{2}})\.xlsx", LedgerExportHandler),
    (rf"/admin/meetings/({OBJECT_ID})/ledger", LedgerEntryHandler),
    (rf"/admin/meetings/({OBJECT_ID})/votes", VotesHandler),
    (rf"/admin/votes/({OBJECT_ID})/close", VoteCloseHandler),
    (rf"/admin/comments/({OBJECT_ID})/hide", CommentHideHandler),
    (rf"/admin/members/({OBJECT_ID})/attendance", MemberAttendanceHandler),
]
