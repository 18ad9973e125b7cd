"""``/api/v1/auth``: sign in with WeChat's login code, sign out.

A member who left (state other than active) still signs in: ``member.active``
is false, and the token reaches only ``GET /me`` and ``GET /me/timeline``.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from handlers.api.base import ApiHandler, api_route, endpoint
from handlers.api.schemas import Schema
from models.enums import MEMBER_STATES
from wxbackend.services.accounts import mpsessions
from wxbackend.services.orgs import mpauth


class LoginRequest(Schema):
    code: Annotated[str, msgspec.Meta(pattern="^[!-~]{1,128}$", description="wx.login 返回的 code")]


class MemberBrief(Schema):
    id: str
    name: str
    active: bool = True  # false: a member who left (see the login description)
    state_label: str = "正常"


class LoginResponse(Schema):
    token: str
    bound: bool
    member: MemberBrief | None
    expires_in: int


class LoginHandler(ApiHandler):
    @endpoint("小程序登录", request=LoginRequest, response=LoginResponse, auth=False, idempotent=True,
              errors=(401, 403), tags=("auth",),
              description="用 wx.login 的 code 换取本平台的令牌；session_key 只保存在服务端。"
              "已绑定但党员状态不是“正常”（已转出、停止党籍、已去世）的也可登录：member.active 为 false，"
              "该令牌只能查看本人信息（GET /api/v1/me，身份证号码和手机号码打码）和本人动态"
              "（GET /api/v1/me/timeline），其他接口一律 403 member_inactive。"
              "党员状态变更时，其全部令牌立即失效（401），须重新登录。")
    async def post(self, body: LoginRequest) -> LoginResponse:
        result = await mpauth.login(self.ctx, body.code, self.client_ip)
        found = result.member
        member = MemberBrief(id=str(found["_id"]), name=found["name"], active=found["state"] == "active",
                             state_label=MEMBER_STATES.get(found["state"], found["state"])) if found else None
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
