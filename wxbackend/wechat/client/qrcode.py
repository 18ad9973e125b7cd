"""QR codes: the official account's parametric codes and the mini-program code.

::

    qr = await oa.create_qrcode("bind:5f1c", expire_seconds=600)   # temporary
    img = oa.qrcode_image_url(qr["ticket"])
    png = await mp.get_wxacode_unlimit("m=5f1c", page="pages/checkin/index")

Arguments are checked here, before any HTTP, against WeChat's documented
limits: scene_str 1-64 characters, temporary codes live at most 30 days,
mini-program scenes at most 32 characters of a restricted set.
"""

from __future__ import annotations

import re
from typing import TypedDict
from urllib.parse import quote

from wxbackend.wechat.client.base import BaseClient

MAX_QR_EXPIRE_SECONDS = 2_592_000
MAX_QR_SCENE_CHARS = 64
MAX_WXACODE_SCENE_CHARS = 32
# Characters getwxacodeunlimit accepts in a scene (no %: it cannot carry urlencoded text).
WXACODE_SCENE = re.compile(r"[0-9A-Za-z!#$&'()*+,/:;=?@\-._~]+")


class QrCode(TypedDict):
    ticket: str
    url: str
    expire_seconds: int | None  # None: permanent


class QrCodeMixin(BaseClient):
    qrcode_base: str

    async def create_qrcode(self, scene_str: str, *,
                            expire_seconds: int | None = None) -> QrCode:
        """Temporary QR_STR_SCENE code when ``expire_seconds`` is given, else permanent."""
        if not isinstance(scene_str, str) or not 1 <= len(scene_str) <= MAX_QR_SCENE_CHARS:
            raise ValueError(f"scene_str must be 1-{MAX_QR_SCENE_CHARS} characters")
        body: dict = {"action_info": {"scene": {"scene_str": scene_str}}}
        if expire_seconds is None:
            body["action_name"] = "QR_LIMIT_STR_SCENE"
        else:
            if (isinstance(expire_seconds, bool) or not isinstance(expire_seconds, int)
                    or not 1 <= expire_seconds <= MAX_QR_EXPIRE_SECONDS):
                raise ValueError(f"expire_seconds must be 1-{MAX_QR_EXPIRE_SECONDS}")
            body["action_name"] = "QR_STR_SCENE"
            body["expire_seconds"] = expire_seconds
        answer = await self._post("/cgi-bin/qrcode/create", body)
        expires = answer.get("expire_seconds")
        return QrCode(ticket=answer["ticket"], url=answer["url"],
                      expire_seconds=int(expires) if expires is not None else None)

    def qrcode_image_url(self, ticket: str) -> str:
        """URL of the QR image (showqrcode); the ticket must be urlencoded."""
        return f"{self.qrcode_base.rstrip('/')}/cgi-bin/showqrcode?ticket={quote(ticket, safe='')}"


class WxaCodeMixin(BaseClient):
    async def get_wxacode_unlimit(self, scene: str, page: str | None = None,
                                  width: int = 430) -> bytes:
        """Mini-program code image (PNG/JPEG bytes) carrying ``scene``."""
        if (not isinstance(scene, str) or len(scene) > MAX_WXACODE_SCENE_CHARS
                or not WXACODE_SCENE.fullmatch(scene)):
            raise ValueError(f"scene must be 1-{MAX_WXACODE_SCENE_CHARS} characters of "
                             "letters, digits and !#$&'()*+,/:;=?@-._~")
        if not 280 <= width <= 1280:
            raise ValueError("width must be 280-1280")
        body: dict = {"scene": scene, "width": width}
        if page:
            if page.startswith("/") or "?" in page:
                raise ValueError("page is a path like pages/index/index, no leading / or query")
            body["page"] = page
        return await self._post("/wxa/getwxacodeunlimit", body, raw=True)
