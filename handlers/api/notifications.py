"""``/api/v1/me/notifications`` and ``/api/v1/me/subscriptions``: a member's inbox.

Every notification a member is sent is listed here with its read state,
whether WeChat delivered it or not (this is the fallback when it could not).
The mini-program asks the member for subscribe-message grants with
``wx.requestSubscribeMessage`` (template ids from ``GET /subscriptions``) and
reports the accepted ones with ``POST /subscriptions``; each grant lets one
notification of that kind reach the member as a subscribe message::

    GET  /api/v1/me/notifications?limit=20&cursor=...
    GET  /api/v1/me/notifications/{notification_id}
    POST /api/v1/me/notifications/{notification_id}/read
    GET  /api/v1/me/subscriptions
    POST /api/v1/me/subscriptions   {"template_ids": ["..."]}
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from handlers.api.base import ApiHandler, api_route, endpoint
from handlers.api.schemas import Page, PageQuery, Schema
from handlers.base import OBJECT_ID
from wxbackend.services.notify import InboxItem, notify_inbox
from wxbackend.services.orgs import mpauth

TemplateId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,128}$", description="订阅消息模板编号")]


class NotificationItem(Schema):
    id: str
    kind: str
    kind_title: str
    title: str
    summary: str
    created_at: str
    read: bool
    page: str | None = None  # mini-program page that shows the subject, if any


class NotificationDetail(NotificationItem):
    body: str | None = None  # a notice's full text
    sender: str | None = None


class Subscription(Schema):
    kind: str
    title: str
    template_id: str
    granted: int


class Subscriptions(Schema):
    items: list[Subscription]


class GrantRequest(Schema):
    template_ids: Annotated[list[TemplateId], msgspec.Meta(min_length=1, max_length=10)]


def item_of(entry: InboxItem) -> NotificationItem:
    doc, message = entry.doc, entry.message
    return NotificationItem(id=str(doc["_id"]), kind=doc["kind"], kind_title=entry.kind_title,
                            title=message.get("title", entry.kind_title),
                            summary=message.get("summary", ""),
                            created_at=doc["created_at"].isoformat(), read=doc.get("read_at") is not None,
                            page=message.get("page") or None)


class NotificationsHandler(ApiHandler):
    @endpoint("我的通知", query=PageQuery, response=Page[NotificationItem], bound=True,
              tags=("notifications",), description="最新的在前；微信未能送达的通知也在这里。")
    async def get(self, query: PageQuery) -> Page[NotificationItem]:
        member = await mpauth.current_member(self.ctx, self.session)
        items, cursor = await notify_inbox.member_inbox(self.ctx, member, query.cursor, query.limit)
        return Page(items=[item_of(i) for i in items], next_cursor=cursor)


class NotificationHandler(ApiHandler):
    @endpoint("通知详情", response=NotificationDetail, bound=True, errors=(404,), tags=("notifications",))
    async def get(self, notification_id: str) -> NotificationDetail:
        member = await mpauth.current_member(self.ctx, self.session)
        entry, notice = await notify_inbox.member_item(self.ctx, member, notification_id)
        item = item_of(entry)
        return NotificationDetail(**msgspec.structs.asdict(item),
                                  body=notice["body"] if notice else None,
                                  sender=notice["org_name"] if notice else None)


class ReadHandler(ApiHandler):
    @endpoint("标为已读", response=NotificationItem, bound=True, errors=(404,), tags=("notifications",))
    async def post(self, notification_id: str) -> NotificationItem:
        member = await mpauth.current_member(self.ctx, self.session)
        return item_of(await notify_inbox.member_read(self.ctx, member, notification_id))


class SubscriptionsHandler(ApiHandler):
    @endpoint("可订阅的消息", response=Subscriptions, bound=True, tags=("notifications",),
              description="wx.requestSubscribeMessage 所用的模板编号，及已授权的剩余次数。")
    async def get(self) -> Subscriptions:
        member = await mpauth.current_member(self.ctx, self.session)
        return Subscriptions(items=[Subscription(**s) for s in
                                    await notify_inbox.subscriptions(self.ctx, member)])

    @endpoint("记录订阅授权", request=GrantRequest, response=Subscriptions, bound=True, errors=(422,),
              tags=("notifications",), description="上报用户在 wx.requestSubscribeMessage 中同意的模板编号。")
    async def post(self, body: GrantRequest) -> Subscriptions:
        member = await mpauth.current_member(self.ctx, self.session)
        found = await notify_inbox.grant(self.ctx, member, body.template_ids)
        return Subscriptions(items=[Subscription(**s) for s in found])


ROUTES = [
    api_route("/api/v1/me/notifications", NotificationsHandler),
    api_route("/api/v1/me/notifications/{notification_id}", NotificationHandler, notification_id=OBJECT_ID),
    api_route("/api/v1/me/notifications/{notification_id}/read", ReadHandler, notification_id=OBJECT_ID),
    api_route("/api/v1/me/subscriptions", SubscriptionsHandler),
]
