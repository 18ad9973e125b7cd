"""A local WeChat: the server APIs we call, and users who talk to our callback.

Point ``WXB_WECHAT_API_BASE`` (and ``oauth_base``, ``qrcode_image_base``) at
it and the server cannot tell it from WeChat: same paths, same JSON, same
errcodes, token expiry and per-appid limits. It records every message sent to
users and plays users who follow, speak, scan and click, calling our
``/wechat/oa`` signed (and encrypted in safe mode) as WeChat does. See
docs/WECHAT-SANDBOX.md::

    config = SandboxConfig.from_settings(settings, callback_url="http://127.0.0.1:8000/wechat/oa")
    server = make_sandbox_app(config).listen(9100, "127.0.0.1")
"""

from __future__ import annotations

import tornado.web

from wxbackend.wechat.sandbox import control, mp, oa, oauth, simulator, tokens
from wxbackend.wechat.sandbox.config import SandboxConfig
from wxbackend.wechat.sandbox.push import Pusher
from wxbackend.wechat.sandbox.world import World

__all__ = ["SandboxApp", "SandboxConfig", "make_sandbox_app"]

OPENID = r"([A-Za-z0-9_\-]{1,64})"

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
    (r"/sandbox/tokens/([A-Za-z0-9_]+)/expire", control.TokenExpireHandler),
    (rf"/sandbox/mp/users/{OPENID}/login-code", control.MpLoginCodeHandler),
    (rf"/sandbox/mp/users/{OPENID}/grant-subscribe", control.MpGrantHandler),
    (rf"/sandbox/mp/users/{OPENID}/phone-code", control.MpPhoneCodeHandler),
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
        super().__init__(routes)


def make_sandbox_app(config: SandboxConfig) -> SandboxApp:
    return SandboxApp(config)
