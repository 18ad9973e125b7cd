"""Follower information of the official account.

::

    info = await oa.user_info(openid)
    if info["subscribe"]:
        ...  # follows; info["subscribe_time"], info.get("unionid")
"""

from __future__ import annotations

from typing import Any

from wxbackend.wechat.client.base import BaseClient


class UserMixin(BaseClient):
    async def user_info(self, openid: str, lang: str = "zh_CN") -> dict[str, Any]:
        """``/cgi-bin/user/info``: ``subscribe`` is 0 (and little else) for non-followers."""
        return await self._get("/cgi-bin/user/info", {"openid": openid, "lang": lang})
