"""Web-page authorisation (网页授权) of the official account: who opened our page.

::

    url = oa.oauth_authorize_url("https://example.org/wechat/bind", state="b1")
    # WeChat redirects the user to .../wechat/bind?code=CODE&state=b1
    who = await oa.oauth_openid(code)      # {"openid": ..., "unionid": ... if any}

The code is valid once and for 5 minutes; the exchange uses appid + secret,
not the access token.
"""

from __future__ import annotations

import re
from typing import NotRequired, TypedDict
from urllib.parse import quote

from wxbackend.wechat.client.base import BaseClient

OAUTH_SCOPES = ("snsapi_base", "snsapi_userinfo")
# WeChat passes state back untouched if it is a-zA-Z0-9, at most 128 bytes.
STATE = re.compile(r"[A-Za-z0-9]{0,128}")


class OAuthIdentity(TypedDict):
    openid: str
    unionid: NotRequired[str]


class OAuthMixin(BaseClient):
    oauth_base: str

    def oauth_authorize_url(self, redirect_uri: str, state: str,
                            scope: str = "snsapi_base") -> str:
        """The authorize URL; WeChat wants exactly this parameter order."""
        if scope not in OAUTH_SCOPES:
            raise ValueError(f"scope must be one of {OAUTH_SCOPES}")
        if not STATE.fullmatch(state):
            raise ValueError("state must be at most 128 letters and digits")
        return (f"{self.oauth_base.rstrip('/')}/connect/oauth2/authorize"
                f"?appid={self.appid}&redirect_uri={quote(redirect_uri, safe='')}"
                f"&response_type=code&scope={scope}&state={state}#wechat_redirect")

    async def oauth_openid(self, code: str) -> OAuthIdentity:
        """Exchange an OAuth ``code`` for the user's openid (and unionid when given)."""
        if not code:
            raise ValueError("code must not be empty")
        answer = await self._get("/sns/oauth2/access_token", {
            "appid": self.appid, "secret": self.secret, "code": code,
            "grant_type": "authorization_code"}, token=False)
        identity = OAuthIdentity(openid=answer["openid"])
        if answer.get("unionid"):
            identity["unionid"] = answer["unionid"]
        return identity
