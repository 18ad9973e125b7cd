"""The official account's custom menu.

::

    await oa.create_menu({"button": [{"type": "click", "name": "帮助", "key": "HELP"}]})
"""

from __future__ import annotations

from typing import Any

from wxbackend.wechat.client.base import BaseClient


class MenuMixin(BaseClient):
    async def create_menu(self, menu: dict[str, Any]) -> None:
        """Replace the whole menu (``{"button": [...]}``); WeChat checks sizes (400xx)."""
        if not isinstance(menu, dict) or not isinstance(menu.get("button"), list):
            raise ValueError('menu must be {"button": [...]}')
        await self._post("/cgi-bin/menu/create", menu)
