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
"""

from __future__ import annotations

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
