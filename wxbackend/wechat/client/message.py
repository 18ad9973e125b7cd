"""Messages to users: customer-service text, template and subscribe messages.

::

    await oa.send_custom_text(openid, "您的绑定已完成。")
    msgid = await oa.send_template(openid, template_id, {"thing1": {"value": "支部大会"}},
                                   url="https://example.org/meetings/1")
    await mp.send_subscribe(openid, template_id, {"thing1": {"value": "支部大会"}},
                            page="pages/meeting/index?id=1")

WeChat's rules the callers must expect: a customer-service message only
within 48 h of the user's last action (45015), a template message only to a
follower (43004), a subscribe message only against a grant the user gave,
one grant per message (43101).
"""

from __future__ import annotations

from typing import Any

from wxbackend.wechat.client.base import BaseClient

TemplateData = dict[str, dict[str, Any]]


class CustomMessageMixin(BaseClient):
    async def send_custom_text(self, openid: str, content: str) -> None:
        """Customer-service (客服) text message; the user must have acted within 48 h."""
        if not content:
            raise ValueError("content must not be empty")
        await self._post("/cgi-bin/message/custom/send", {
            "touser": openid, "msgtype": "text", "text": {"content": content}})


class TemplateMessageMixin(BaseClient):
    async def send_template(self, openid: str, template_id: str, data: TemplateData,
                            url: str | None = None,
                            miniprogram: dict[str, str] | None = None) -> int:
        """Official-account template message; returns WeChat's msgid.

        ``miniprogram`` is ``{"appid", "pagepath"}``; WeChat opens it instead of
        ``url`` when both are given.
        """
        body: dict[str, Any] = {"touser": openid, "template_id": template_id, "data": data}
        if url:
            body["url"] = url
        if miniprogram:
            body["miniprogram"] = miniprogram
        answer = await self._post("/cgi-bin/message/template/send", body)
        return int(answer["msgid"])


class SubscribeMessageMixin(BaseClient):
    async def send_subscribe(self, openid: str, template_id: str, data: TemplateData,
                             page: str | None = None) -> None:
        """Mini-program subscribe message; spends one grant of ``template_id``."""
        body: dict[str, Any] = {"touser": openid, "template_id": template_id, "data": data}
        if page:
            body["page"] = page
        await self._post("/cgi-bin/message/subscribe/send", body)
