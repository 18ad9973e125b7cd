"""Management web: my inbox, notices (通知公告), the outbox and the queue's health."""

from __future__ import annotations

import tornado.escape
import tornado.web

from handlers.admin_base import AdminHandler
from handlers.base import PATH_ID
from wxbackend.errors import Conflict, InvalidInput
from wxbackend.services import orgs
from wxbackend.services.notify import notices, notify_delivery, notify_inbox, outbox
from wxbackend.services.orgs import orgtree


def _back(handler: AdminHandler, default: str, message: str) -> None:
    target = handler.get_body_argument("next", "") or default
    if not target.startswith("/admin/"):
        target = default
    sep = "&" if "?" in target else "?"
    handler.redirect(f"{target}{sep}msg=" + tornado.escape.url_escape(message))


class InboxHandler(AdminHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        items, cursor = await notify_inbox.user_inbox(self.ctx, self.actor,
                                                      self.get_query_argument("cursor", None))
        self.render("admin/inbox.html", items=items, next_cursor=cursor, item=None, notice=None)


class InboxItemHandler(AdminHandler):
    @tornado.web.authenticated
    async def get(self, notification_id: str) -> None:
        item, notice = await notify_inbox.user_open(self.ctx, self.actor, notification_id)
        self.render("admin/inbox.html", items=[], next_cursor=None, item=item, notice=notice)


class NoticesHandler(AdminHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        org = await orgs.view(self.ctx, self.actor, self.get_query_argument("org", "") or self.home_org())
        rows, cursor = await notices.page(self.ctx, self.actor, org["_id"],
                                          self.get_query_argument("before", None))
        self.render("admin/notices.html", org=org, rows=rows, next_cursor=cursor, notice=None,
                    audiences=notices.AUDIENCES, values={}, error=None)

    @tornado.web.authenticated
    async def post(self) -> None:
        org = await orgs.view(self.ctx, self.actor, self.form("org"))
        values = {k: self.form(k) for k in ("audience", "title", "body")}
        try:
            notice = await notices.send(self.ctx, self.actor, org["_id"], values["audience"],
                                        values["title"], values["body"])
        except InvalidInput as exc:
            rows, cursor = await notices.page(self.ctx, self.actor, org["_id"])
            self.set_status(400)
            self.render("admin/notices.html", org=org, rows=rows, next_cursor=cursor, notice=None,
                        audiences=notices.AUDIENCES, values=values, error=exc.message)
            return
        self.redirect(f"/admin/notices/{notice['_id']}?msg=" + tornado.escape.url_escape("已发送，正在投递"))


class NoticeHandler(AdminHandler):
    @tornado.web.authenticated
    async def get(self, notice_id: str) -> None:
        notice = await notices.view(self.ctx, self.actor, notice_id)
        org = await orgs.get(self.ctx, notice["org_id"])
        self.render("admin/notices.html", org=org, rows=[], next_cursor=None, notice=notice,
                    audiences=notices.AUDIENCES, values={}, error=None)


class OutboxHandler(AdminHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        arg = self.get_query_argument
        org_id = arg("org", "") or self.home_org()
        if arg("code", "").strip():  # the organisation filter, by its code
            org_id = (await orgs.by_code(self.ctx, arg("code").strip()))["_id"]
        org = await orgs.view(self.ctx, self.actor, org_id)
        result = await outbox.page(self.ctx, self.actor, org["_id"], day=arg("day", ""),
                                   status=arg("status", "failed"), kind=arg("kind", ""),
                                   cursor=arg("cursor", None))
        counts = await outbox.day_counts(self.ctx, self.actor, org["_id"])
        tree = await orgtree.snapshot(self.ctx)
        self.render("admin/outbox.html", page=result, counts=counts, org_name=tree.name,
                    kinds={k.name: k.title for k in self.ctx.registry.kinds.values()},
                    statuses=outbox.STATUS_LABELS, channels=outbox.CHANNEL_LABELS,
                    health=await outbox.health(self.ctx), can_retry=self.actor.can(
                        "outbox.retry", org["org_ancestors"]),
                    wechat_failure=outbox.failure_advice, retry_helps=outbox.retry_helps)


class RetryHandler(AdminHandler):
    @tornado.web.authenticated
    async def post(self, notification_id: str) -> None:
        await outbox.retry(self.ctx, self.actor, notification_id)
        _back(self, "/admin/outbox", "已重新发送")


class RetryManyHandler(AdminHandler):
    """Retry every failed notification ticked on the page."""

    @tornado.web.authenticated
    async def post(self) -> None:
        ids = self.get_body_arguments("id")
        done, hopeless = 0, 0
        for notification_id in ids[:outbox.PAGE_SIZE]:
            try:
                await outbox.retry(self.ctx, self.actor, notification_id)
                done += 1
            except Conflict as refused:
                # Retried by someone else meanwhile: nothing to say. Hopeless: say so.
                hopeless += refused.code == "retry_cannot_help"
        note = f"，{hopeless}条重新发送也不会成功（见各条的处理建议），未发送" if hopeless else ""
        _back(self, "/admin/outbox", f"已重新发送{done}条{note}")


class ResumeHandler(AdminHandler):
    @tornado.web.authenticated
    async def post(self) -> None:
        await outbox.resume(self.ctx, self.actor, self.form("api"))
        _back(self, "/admin/outbox", f"已恢复{notify_delivery.API_LABELS.get(self.form('api'), '')}发送")


ROUTES = [
    (r"/admin/inbox", InboxHandler),
    (rf"/admin/inbox/{PATH_ID}", InboxItemHandler),
    (r"/admin/notices", NoticesHandler),
    (rf"/admin/notices/{PATH_ID}", NoticeHandler),
    (r"/admin/outbox", OutboxHandler),
    (rf"/admin/outbox/{PATH_ID}/retry", RetryHandler),
    (r"/admin/outbox/retry", RetryManyHandler),
    (r"/admin/outbox/resume", ResumeHandler),
]
