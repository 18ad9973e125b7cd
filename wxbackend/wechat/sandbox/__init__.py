"""A local WeChat: the server APIs we call, and users who talk to our callback.

Point ``WXB_WECHAT_API_BASE`` (and ``oauth_base``, ``qrcode_image_base``) at
it and the server cannot tell it from WeChat: same paths, same JSON, same
errcodes, token expiry and per-appid limits. It records every message sent to
users and plays users who follow, speak, scan and click, calling our
``/wechat/oa`` signed (and encrypted in safe mode) as WeChat does. See
docs/WECHAT-SANDBOX.md::

    config = SandboxConfig.from_settings(settings, callback_url="http://127.0.0.1:8000/wechat/oa")
    server, url = start_sandbox(config, "127.0.0.1", 9100)   # in a running event loop
"""

from __future__ import annotations

import logging

import tornado.httpserver
import tornado.netutil
import tornado.web

from wxbackend.settings import Settings
from wxbackend.wechat.sandbox import control, mp, oa, oauth, simulator, tokens
from wxbackend.wechat.sandbox.config import SandboxConfig
from wxbackend.wechat.sandbox.push import Pusher
from wxbackend.wechat.sandbox.world import World

__all__ = ["SandboxApp", "SandboxConfig", "make_sandbox_app", "start_for_demo", "start_sandbox"]

OPENID = r"([A-Za-z0-9_\-]{1,64})"
request_log = logging.getLogger("wxbackend.sandbox")

WECHAT_ROUTES = [
    (r"/cgi-bin/token", tokens.TokenHandler),
    (r"/cgi-bin/stable_token", tokens.StableTokenHandler),
    (r"/cgi-bin/message/custom/send", oa.CustomSendHandler),
    (r"/cgi-bin/message/template/send", oa.TemplateSendHandler),
    (r"/cgi-bin/qrcode/create", oa.QrCreateHandler),
    (r"/cgi-bin/showqrcode", oa.ShowQrHandler),
    (r"/cgi-bin/user/info", oa.UserInfoHandler),
    (r"/cgi-bin/menu/create", oa.MenuCreateHandler),
    (r"/cgi-bin/menu/get", oa.MenuGetHandler),
    (r"/connect/oauth2/authorize", oauth.AuthorizeHandler),
    (r"/sns/oauth2/access_token", oauth.OAuthTokenHandler),
    (r"/sns/jscode2session", mp.Code2SessionHandler),
    (r"/cgi-bin/message/subscribe/send", mp.SubscribeSendHandler),
    (r"/wxa/getwxacodeunlimit", mp.WxaCodeHandler),
    (r"/wxa/business/getuserphonenumber", mp.PhoneNumberHandler),
]

CONTROL_ROUTES = [
    (r"/sandbox/?", control.IndexHandler),
    (r"/sandbox/outbox", control.OutboxHandler),
    (r"/sandbox/faults", control.FaultsHandler),
    (r"/sandbox/stats", control.StatsHandler),
    (r"/sandbox/menu", control.MenuHandler),
    (r"/sandbox/users", control.UsersHandler),
    (rf"/sandbox/users/{OPENID}", control.UserHandler),
    (rf"/sandbox/mp/users/{OPENID}", control.MpUserHandler),
    (r"/sandbox/tokens/([A-Za-z0-9_]+)/expire", control.TokenExpireHandler),
    (rf"/sandbox/mp/users/{OPENID}/login-code", control.MpLoginCodeHandler),
    (rf"/sandbox/mp/users/{OPENID}/grant-subscribe", control.MpGrantHandler),
    (rf"/sandbox/mp/users/{OPENID}/phone-code", control.MpPhoneCodeHandler),
    (r"/sandbox/mp/codes", control.MpCodesHandler),
    (r"/sandbox/qrcodes", control.QrCodesHandler),
]


class SandboxApp(tornado.web.Application):
    """The sandbox; ``world`` is its state (tests may read it directly)."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.world = World(config)
        pusher = Pusher(config)
        state = {"world": self.world}
        actions = "|".join(simulator.ACTIONS)
        routes = [(pattern, handler, state) for pattern, handler in WECHAT_ROUTES + CONTROL_ROUTES]
        routes += [
            (rf"/sandbox/users/{OPENID}/({actions})", simulator.UserActionHandler,
             {**state, "pusher": pusher}),
            (r"/sandbox/verify", simulator.VerifyHandler, {**state, "pusher": pusher}),
        ]
        super().__init__(routes, log_function=_log_request)


def _log_request(handler: tornado.web.RequestHandler) -> None:
    """INFO below 500: a 404 or 409 here is a user's action refused, as WeChat would, not
    a fault of the sandbox (Tornado's default logs 4xx as warnings)."""
    status = handler.get_status()
    level = logging.INFO if status < 500 else logging.ERROR
    if request_log.isEnabledFor(level):
        request_log.log(level, "%s %s %d", handler.request.method, handler.request.path, status)


def make_sandbox_app(config: SandboxConfig) -> SandboxApp:
    return SandboxApp(config)


def start_sandbox(config: SandboxConfig, host: str = "127.0.0.1",
                  port: int = 0) -> tuple[tornado.httpserver.HTTPServer, str]:
    """Listen in the running event loop (port 0: a free one); returns the server and its URL."""
    sockets = tornado.netutil.bind_sockets(port, host)
    server = tornado.httpserver.HTTPServer(make_sandbox_app(config))
    server.add_sockets(sockets)
    shown = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host  # noqa: S104 (a comparison)
    return server, f"http://{shown}:{sockets[0].getsockname()[1]}"


def start_for_demo(settings: Settings) -> tornado.httpserver.HTTPServer:
    """``serve --demo``: a sandbox in this process that our server calls instead of WeChat.

    Points ``settings.wechat`` api_base, oauth_base and qrcode_image_base at it
    (call before the app and the WeChat clients are built) and its users at our
    /wechat/oa. Its base URL (``settings.wechat.api_base``) is what the README
    calls ``S``: the control API is ``$S/sandbox/...``.
    """
    host = settings.http.host
    local = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host  # noqa: S104 (a comparison)
    callback = f"http://{local}:{settings.http.port}/wechat/oa"
    config = SandboxConfig.from_settings(settings, callback_url=callback)
    server, url = start_sandbox(config, "127.0.0.1", settings.wechat.sandbox_port)
    wechat = settings.wechat
    wechat.api_base = wechat.oauth_base = wechat.qrcode_image_base = url
    return server
