"""Management web: a secretary removes a member's WeChat binding.

``POST /admin/members/<id>/unbind`` with ``channel=oa|mp`` (permission
``member.unbind``); the member page shows the button next to each binding::

    <form method="post" action="/admin/members/<id>/unbind">
      <input type="hidden" name="channel" value="oa"> <button>解除绑定</button></form>
"""

from __future__ import annotations

import tornado.escape
import tornado.web

from handlers.admin_base import AdminHandler
from handlers.base import PATH_ID
from wxbackend.services.orgs import binding


class MemberUnbindHandler(AdminHandler):
    @tornado.web.authenticated
    async def post(self, member_id: str) -> None:
        channel = self.form("channel")
        await binding.unbind(self.ctx, self.actor, member_id, channel)
        label = binding.CHANNEL_LABELS[channel]
        self.redirect(f"/admin/members/{member_id}?msg="
                      + tornado.escape.url_escape(f"已解除{label}绑定"))


ROUTES = [
    (rf"/admin/members/{PATH_ID}/unbind", MemberUnbindHandler),
]
