"""Mini-program sign-in: ``code2session`` and the phone-number code.

::

    session = await mp.code2session(js_code)   # {"openid", "session_key", "unionid"?}
    phone = await mp.get_user_phone_number(phone_code)   # {"purePhoneNumber", ...}

Both codes are single use. The session_key never leaves the server.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

from wxbackend.wechat.client.base import BaseClient


class MpSession(TypedDict):
    openid: str
    session_key: str
    unionid: NotRequired[str]


class WxaAuthMixin(BaseClient):
    async def code2session(self, js_code: str) -> MpSession:
        """Exchange ``wx.login``'s code (40029 when unknown or used; 45011 rate limit)."""
        if not js_code:
            raise ValueError("js_code must not be empty")
        answer = await self._get("/sns/jscode2session", {
            "appid": self.appid, "secret": self.secret, "js_code": js_code,
            "grant_type": "authorization_code"}, token=False)
        session = MpSession(openid=answer["openid"], session_key=answer["session_key"])
        if answer.get("unionid"):
            session["unionid"] = answer["unionid"]
        return session

    async def get_user_phone_number(self, code: str) -> dict[str, Any]:
        """The ``phone_info`` for a getPhoneNumber button code (single use, 5 min)."""
        if not code:
            raise ValueError("code must not be empty")
        answer = await self._post("/wxa/business/getuserphonenumber", {"code": code})
        return answer["phone_info"]
