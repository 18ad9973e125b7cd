"""The official account's endpoints: the callback and the member binding page.

``GET/POST /wechat/oa`` hand the query and body to
:mod:`wxbackend.wechat.callback` and write what it answers. ``/wechat/oa/bind``
is the page a member opens from the account (menu or welcome link)::

    GET  /wechat/oa/bind                 no openid cookie -> WeChat OAuth (snsapi_base)
    GET  /wechat/oa/bind?code=..&state=..  OAuth returns: code -> openid in a signed cookie
    GET  /wechat/oa/bind                 the form (name, ID-card number, phone)
    POST /wechat/oa/bind                 verify and bind (XSRF-protected)

The openid only ever comes from the OAuth exchange, kept in a signed,
HttpOnly, Secure cookie for a quarter of an hour; a form field never names it.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from typing import Any

from handlers.base import BaseHandler
from wxbackend.errors import DomainError, Forbidden, InvalidInput, TooManyRequests, Unavailable
from wxbackend.services.orgs import binding
from wxbackend.wechat import callback
from wxbackend.wechat.inbound import CallbackError

log = logging.getLogger("wxbackend.wechat.http")

BIND_PATH = "/wechat/oa/bind"
STATE_COOKIE = "wxb_oa_state"
OPENID_COOKIE = "wxb_oa_openid"
STATE_SECONDS = 600
OPENID_SECONDS = 900


class OACallbackHandler(BaseHandler):
    """WeChat's servers: authenticated by signature, so no XSRF cookie."""

    def check_xsrf_cookie(self) -> None:
        return None

    def wants_json(self) -> bool:
        return False

    def _query(self) -> dict[str, str]:
        return {k: v[-1].decode("utf-8", "replace") for k, v in self.request.query_arguments.items()}

    def _refuse(self, exc: CallbackError) -> None:
        log.warning("official-account callback refused", extra={"fields": {
            "status": exc.status, "reason": exc.code, "ip": self.client_ip}})
        self.set_status(exc.status)
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish(exc.code)

    def get(self) -> None:
        try:
            echostr = callback.verify_url(self.ctx, self._query())
        except CallbackError as exc:
            self._refuse(exc)
            return
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish(echostr)

    async def post(self) -> None:
        try:
            answer = await callback.handle_post(self.ctx, self._query(), self.request.body,
                                                self.request.headers.get("Content-Length"),
                                                answer_early=self._answer_success)
        except CallbackError as exc:
            self._refuse(exc)
            return
        if answer is not None:
            self.set_header("Content-Type", answer.content_type)
            self.finish(answer.body)

    def _answer_success(self) -> None:
        # Over budget: "success" now; the handler goes on and its reply follows by other means.
        if not self._finished:
            self.set_header("Content-Type", "text/plain; charset=UTF-8")
            self.finish(callback.SUCCESS)


class BindPageHandler(BaseHandler):
    """The member's binding page inside WeChat (a normal form: XSRF applies)."""

    def prepare(self) -> None:
        super().prepare()
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Frame-Options", "DENY")
        # The OAuth code is in our URL: do not hand it to anyone in a Referer.
        self.set_header("Referrer-Policy", "no-referrer")

    def wants_json(self) -> bool:
        return False

    def render_error_page(self, status: int, error: dict[str, Any]) -> None:
        self.render("wechat/message.html", title="无法完成", message=error["message"], ok=False)

    def _set_cookie(self, name: str, value: str, seconds: int) -> None:
        self.set_signed_cookie(name, value, expires_days=None, max_age=seconds, httponly=True,
                               secure=True, samesite="Lax", path=BIND_PATH)

    def _identity(self) -> dict[str, str] | None:
        raw = self.get_signed_cookie(OPENID_COOKIE, max_age_days=OPENID_SECONDS / 86400)
        if not raw:
            return None
        try:
            identity = json.loads(raw)
        except ValueError:
            return None
        return identity if isinstance(identity, dict) and identity.get("openid") else None

    async def get(self) -> None:
        code = self.get_query_argument("code", "")
        if code:
            await self._oauth_return(code, self.get_query_argument("state", ""))
            return
        identity = self._identity()
        if identity is None:
            self._to_oauth()
            return
        member = await binding.member_for(self.ctx, "oa", identity["openid"])
        if member is not None:
            self.render("wechat/message.html", title="已绑定", ok=True,
                        message=f"您已绑定为{member['name']}，无需重复绑定。")
            return
        self._form()

    def _to_oauth(self) -> None:
        from wxbackend.wechat.client import oa_client

        state = secrets.token_hex(16)
        self._set_cookie(STATE_COOKIE, state, STATE_SECONDS)
        target = self.ctx.settings.public_url + BIND_PATH
        self.redirect(oa_client(self.ctx).oauth_authorize_url(target, state, scope="snsapi_base"))

    async def _oauth_return(self, code: str, state: str) -> None:
        from wxbackend.wechat.client import oa_client
        from wxbackend.wechat.errors import WeChatError

        expected = self.get_signed_cookie(STATE_COOKIE, max_age_days=STATE_SECONDS / 86400)
        # The state ties the code to this browser: nobody can make us bind their openid.
        if not expected or not hmac.compare_digest(expected, state.encode()):
            raise InvalidInput("bind_state", "链接已失效，请从公众号菜单重新打开绑定页面")
        self.clear_cookie(STATE_COOKIE, path=BIND_PATH)
        try:
            who = await oa_client(self.ctx).oauth_openid(code)
        except WeChatError as exc:
            log.warning("oauth code exchange failed", extra={"fields": {
                "errcode": exc.errcode, "errmsg": exc.errmsg}})
            raise Unavailable("oauth_failed", "微信授权失败，请从公众号菜单重新打开绑定页面") from None
        identity = {"openid": who["openid"], "unionid": who.get("unionid") or ""}
        self._set_cookie(OPENID_COOKIE, json.dumps(identity), OPENID_SECONDS)
        # A clean URL: reloading the page must not replay a used code.
        self.redirect(BIND_PATH)

    def _form(self, error: str = "", values: dict[str, str] | None = None) -> None:
        self.render("wechat/bind.html", error=error, values=values or {})

    async def post(self) -> None:
        identity = self._identity()
        if identity is None:
            raise Forbidden("bind_session", "绑定页面已过期，请从公众号菜单重新打开")
        form = {k: self.get_body_argument(k, "").strip() for k in ("name", "id_card", "phone")}
        try:
            member = await binding.bind(self.ctx, "oa", identity["openid"], identity.get("unionid"),
                                        form["name"], form["id_card"], form["phone"], self.client_ip)
        except TooManyRequests as exc:
            self.set_status(exc.status)
            self.set_header("Retry-After", str(exc.retry_after))
            self.render("wechat/message.html", title="暂时无法绑定", message=exc.message, ok=False)
            return
        except DomainError as exc:
            self.set_status(exc.status)
            # The ID-card number is not echoed back into the page.
            self._form(exc.message, {"name": form["name"], "phone": form["phone"]})
            return
        self.render("wechat/message.html", title="绑定成功", ok=True,
                    message=f"{member['name']}同志，您已成功绑定党员身份。现在可以返回公众号，"
                            "发送“我的支部”查看支部信息。")


ROUTES = [
    (r"/wechat/oa", OACallbackHandler),
    (BIND_PATH, BindPageHandler),
]
