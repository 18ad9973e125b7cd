"""``/api/v1/auth``: sign in with WeChat's login code, sign out."""

from __future__ import annotations

from typing import Annotated

import msgspec

from handlers.api.base import ApiHandler, api_route, endpoint
from handlers.api.schemas import Schema
from wxbackend.services.accounts import mpsessions
from wxbackend.services.orgs import mpauth


class LoginRequest(Schema):
    code: Annotated[str, msgspec.Meta(pattern="^[!-~]{1,128}$", description="wx.login 返回的 code")]


class MemberBrief(Schema):
    id: str
    name: str


class LoginResponse(Schema):
    token: str
    bound: bool
    member: MemberBrief | None
    expires_in: int


class LoginHandler(ApiHandler):
    @endpoint("小程序登录", request=LoginRequest, response=LoginResponse, auth=False, idempotent=True,
              errors=(401, 403), tags=("auth",),
              description="用 wx.login 的 code 换取本平台的令牌；session_key 只保存在服务端。")
    async def post(self, body: LoginRequest) -> LoginResponse:
        result = await mpauth.login(self.ctx, body.code, self.client_ip)
        member = MemberBrief(id=str(result.member["_id"]), name=result.member["name"]) if result.member else None
        return LoginResponse(token=result.token, bound=member is not None, member=member,
                             expires_in=self.ctx.settings.api.token_ttl_seconds)


class LogoutHandler(ApiHandler):
    @endpoint("退出登录（吊销令牌）", tags=("auth",))
    async def post(self) -> dict:
        await mpsessions.revoke(self.ctx, self.session)
        return {}


ROUTES = [
    api_route("/api/v1/auth/login", LoginHandler),
    api_route("/api/v1/auth/logout", LogoutHandler),
]
