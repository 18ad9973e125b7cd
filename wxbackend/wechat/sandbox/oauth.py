"""Web-page authorisation (网页授权): the authorize redirect and the code exchange.

``GET /connect/oauth2/authorize?appid=..&redirect_uri=..&response_type=code
&scope=snsapi_base&state=..&sandbox_openid=<openid>`` plays the WeChat client
of user ``<openid>``: it redirects (302) to ``redirect_uri?code=..&state=..``.
Without ``sandbox_openid`` a small page asks which user is browsing (demo).
``GET /sns/oauth2/access_token`` exchanges the code once (40163 on reuse).
"""

from __future__ import annotations

import secrets
from urllib.parse import urlencode

from tornado.escape import xhtml_escape

from wxbackend.wechat.sandbox.base import ApiHandler, ControlError, SandboxHandler
from wxbackend.wechat.sandbox.world import ApiError

SCOPES = ("snsapi_base", "snsapi_userinfo")

CHOOSE_USER_PAGE = """<!doctype html><html lang="zh-CN"><meta charset="utf-8">
<title>模拟微信授权</title><body style="font-family:sans-serif;max-width:28em;margin:2em auto">
<h1>模拟微信网页授权</h1><p>请选择以哪位微信用户的身份打开页面（沙箱）。</p>
<form method="get" action="/connect/oauth2/authorize">{hidden}
<input name="sandbox_openid" placeholder="openid" required> <button>授权</button></form>
<ul>{users}</ul></body></html>"""


class AuthorizeHandler(SandboxHandler):
    def get(self) -> None:
        args = {name: self.get_query_argument(name, "") for name in
                ("appid", "redirect_uri", "response_type", "scope", "state")}
        app = self.world.apps.get(args["appid"])
        if app is None or app.kind != "oa":
            raise ControlError(400, "appid 参数错误")
        if args["response_type"] != "code" or args["scope"] not in SCOPES:
            raise ControlError(400, "scope 或 response_type 参数错误")
        if not args["redirect_uri"].startswith(("http://", "https://")):
            raise ControlError(400, "redirect_uri 参数错误")
        openid = self.get_query_argument("sandbox_openid", "")
        if not openid:
            self.finish(self._choose_page(args))
            return
        user = self.world.oa_user(openid)
        code = self.world.issue_code("oauth", app.appid, user.openid, scope=args["scope"])
        joiner = "&" if "?" in args["redirect_uri"] else "?"
        self.redirect(args["redirect_uri"] + joiner + urlencode({"code": code,
                                                                 "state": args["state"]}))

    def _choose_page(self, args: dict[str, str]) -> str:
        hidden = "".join(f'<input type="hidden" name="{k}" value="{xhtml_escape(v)}">'
                         for k, v in args.items())
        query = urlencode(args)
        users = "".join(
            f'<li><a href="/connect/oauth2/authorize?{xhtml_escape(query)}&amp;sandbox_openid='
            f'{xhtml_escape(u.openid)}">{xhtml_escape(u.openid)}</a></li>'
            for u in self.world.oa_users.values())
        return CHOOSE_USER_PAGE.format(hidden=hidden, users=users)


class OAuthTokenHandler(ApiHandler):
    def get(self) -> None:
        app = self.world.credentials(self.get_query_argument("appid", ""),
                                     self.get_query_argument("secret", ""), kind="oa")
        if self.get_query_argument("grant_type", "") != "authorization_code":
            raise ApiError(40002, "invalid grant_type")
        self.world.count_usage(app.appid, self.request.path)
        code = self.world.redeem_code(self.get_query_argument("code", ""), "oauth",
                                      app.appid, reuse_errcode=40163)
        scope = code.extra["scope"]
        answer = {"access_token": secrets.token_urlsafe(64), "expires_in": 7200,
                  "refresh_token": secrets.token_urlsafe(64), "openid": code.openid,
                  "scope": scope}
        unionid = self.world.oa_user(code.openid).unionid
        if scope == "snsapi_userinfo" and unionid:
            answer["unionid"] = unionid
        self.write_json(answer)
