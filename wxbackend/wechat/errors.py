"""Typed errors of WeChat's server APIs, chosen by ``errcode``.

WeChat answers errors with HTTP 200 and ``{"errcode": n, "errmsg": "..."}``;
the errmsg carries a changing ``rid: ...`` suffix, so code matches on the
errcode only. :func:`error_for` picks the subclass from a table, as wechatpy's
parser picks a message class by type::

    try:
        await client.send_subscribe(openid, template_id, data)
    except UserNotSubscribed:
        ...  # the member did not grant this message: nothing to retry
    except WeChatError as exc:
        log.warning("subscribe send failed: %s %s", exc.errcode, exc.errmsg)

:class:`WeChatNetworkError` (timeouts, refused connections, garbage answers)
is a :class:`WeChatError` too, so one ``except WeChatError`` covers both.

:func:`explain` says in Chinese what an errcode means for the person reading
the outbox, what to do, and whether sending the same message again can help::

    advice = explain(40003)
    advice.text      # "该微信用户已不存在或未关注公众号"
    advice.advice    # "请核对绑定或让党员重新绑定……"
    advice.retry_helps   # False: the same openid fails again
"""

from __future__ import annotations

from dataclasses import dataclass

# Our own errcode for failures that never got a WeChat answer; WeChat does not use -2.
NETWORK_ERRCODE = -2


class WeChatError(Exception):
    """An errcode != 0 from WeChat. ``retryable``: the same call may succeed later."""

    errcode: int = 0
    retryable = False

    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(f"{errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg


class WeChatNetworkError(WeChatError):
    """No usable answer: timeout, connection error, non-JSON or 5xx response.

    ``retryable`` is False for answers that will not improve (a 404 page).
    """

    def __init__(self, errmsg: str, *, retryable: bool = True) -> None:
        super().__init__(NETWORK_ERRCODE, errmsg)
        self.retryable = retryable


class SystemBusy(WeChatError):
    """-1: 系统繁忙, try again shortly."""

    retryable = True


class InvalidCredential(WeChatError):
    """40001: wrong secret, or the access token is invalid or not the latest."""


class InvalidOpenId(WeChatError):
    """40003: the openid does not belong to this app."""


class InvalidAppId(WeChatError):
    """40013: unknown appid."""


class InvalidAccessToken(WeChatError):
    """40014: malformed access token."""


class InvalidCode(WeChatError):
    """40029: the login/OAuth/phone code is unknown, expired or already used."""


class CodeUsed(InvalidCode):
    """40163: the OAuth code was already exchanged."""


class CodeBlocked(WeChatError):
    """40226: WeChat blocks this high-risk user's mini-program login."""


class InvalidTemplateId(WeChatError):
    """40037: the template does not exist for this app."""


class InvalidSecret(WeChatError):
    """40125: wrong AppSecret."""


class AccessTokenMissing(WeChatError):
    """41001: the call carried no access token."""


class AccessTokenExpired(WeChatError):
    """42001: the access token expired."""


class RequireSubscribe(WeChatError):
    """43004: the user does not follow the official account."""


class UserNotSubscribed(WeChatError):
    """43101: the user has not granted (or has used up) this subscribe message."""


class QuotaExceeded(WeChatError):
    """45009: the API's daily (or, for some APIs, per-minute) quota is used up."""


class CodeRateLimited(WeChatError):
    """45011: minute quota reached (code2session: per user; others: per app)."""


class ResponseWindowClosed(WeChatError):
    """45015: customer-service message outside the 48 h window after the user's last action."""


class ApiUnauthorized(WeChatError):
    """48001: this app has no permission for the API."""


class InvalidRequest(WeChatError):
    """A malformed request: menu sizes, bad page, bad scene, bad template data, ..."""


# Name kept general for callers that do not care which API hit the minute limit.
RateLimited = CodeRateLimited

ERRCODE_CLASSES: dict[int, type[WeChatError]] = {
    -1: SystemBusy,
    40001: InvalidCredential,
    40003: InvalidOpenId,
    40013: InvalidAppId,
    40014: InvalidAccessToken,
    40029: InvalidCode,
    40037: InvalidTemplateId,
    40125: InvalidSecret,
    40163: CodeUsed,
    40226: CodeBlocked,
    41001: AccessTokenMissing,
    42001: AccessTokenExpired,
    43004: RequireSubscribe,
    43101: UserNotSubscribed,
    45009: QuotaExceeded,
    45011: CodeRateLimited,
    45015: ResponseWindowClosed,
    48001: ApiUnauthorized,
    **dict.fromkeys((40016, 40017, 40018, 40019, 40020, 40023, 40024, 40025, 40026, 40027,
                     40097, 40169, 41030, 47001, 47003), InvalidRequest),
}


def error_for(errcode: int, errmsg: str) -> WeChatError:
    """The typed exception for a WeChat ``errcode`` (plain WeChatError when unknown)."""
    return ERRCODE_CLASSES.get(errcode, WeChatError)(errcode, errmsg)


# -- what an errcode means for the people reading the outbox --------------------------------


@dataclass(frozen=True)
class Advice:
    """An errcode in Chinese: what happened, what to do, and whether 重新发送 can help.

    ``retry_helps`` is False for permanent failures: the same message sent again to
    the same recipient fails the same way, whatever the admin waits for.
    """

    errcode: int
    text: str
    advice: str
    retry_helps: bool

    def __str__(self) -> str:
        return f"{self.text}。{self.advice}"


_RETRY_LATER = "稍后点“重新发送”即可"
_CHECK_CONFIG = "请系统管理员核对公众号/小程序的 AppID、AppSecret 配置后重新发送"
_DEVELOPERS = "这是消息内容或模板配置的问题，重新发送不会成功，请联系系统开发人员"

# errcode -> (what happened, what to do, whether sending again can succeed).
ADVICE: dict[int, tuple[str, str, bool]] = {
    NETWORK_ERRCODE: ("未能连上微信服务器（超时或网络中断）", "请检查服务器网络，" + _RETRY_LATER, True),
    -1: ("微信系统繁忙", _RETRY_LATER, True),
    40001: ("微信拒绝了接口凭证（已失效或不是最新的）", _CHECK_CONFIG, True),
    40003: ("该微信用户已不存在或未关注公众号",
            "请核对绑定或让党员重新绑定；重新发送不会成功，本通知仍可在小程序“我的通知”中查看", False),
    40013: ("开发者ID（AppID）无效", _CHECK_CONFIG, True),
    40014: ("接口凭证格式不正确", _CHECK_CONFIG, True),
    40037: ("消息模板不存在或不属于本公众号/小程序",
            "请在设置中核对模板ID；已生成的通知仍使用原模板，重新发送不会成功", False),
    40125: ("开发者密码（AppSecret）不正确", _CHECK_CONFIG, True),
    41001: ("请求缺少接口凭证", _CHECK_CONFIG, True),
    42001: ("接口凭证已过期", _RETRY_LATER, True),
    43004: ("该党员已取消关注公众号",
            "重新发送将改由小程序订阅消息或站内通知送达；也可请党员重新关注公众号", True),
    43101: ("党员没有订阅（或已用完）这类小程序消息",
            "重新发送将改由公众号或站内通知送达；也可请党员在小程序中重新订阅", True),
    45009: ("今日该接口的调用次数已达微信上限", "发送已暂停至次日零点自动恢复，之后再重新发送", True),
    45011: ("调用过于频繁，超过微信每分钟限制", _RETRY_LATER, True),
    45015: ("党员超过 48 小时未与公众号互动，无法再发送客服消息",
            "请等待党员与公众号互动后再发送，或改用通知公告", False),
    47001: ("消息数据格式不正确", _DEVELOPERS, False),
    47003: ("消息模板的参数不正确（可能为空或不符合规则）", _DEVELOPERS, False),
    48001: ("公众号/小程序没有这个接口的权限", "请在微信公众平台开通相应权限后重新发送", True),
}


def explain(errcode: int) -> Advice:
    """What ``errcode`` means in Chinese; unknown codes get a generic text with the code."""
    known = ADVICE.get(errcode)
    if known is not None:
        return Advice(errcode, *known)
    if ERRCODE_CLASSES.get(errcode) is InvalidRequest:
        return Advice(errcode, f"微信认为请求参数不正确（错误码 {errcode}）", _DEVELOPERS, False)
    return Advice(errcode, f"微信返回了错误（错误码 {errcode}）",
                  "可稍后重新发送；如反复失败，请把错误码告知系统管理员", True)
