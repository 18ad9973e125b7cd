"""Mini-program sign-in: WeChat's login code in, our bearer token out.

``wx.login`` gives the phone a single-use code; we exchange it with
``/sns/jscode2session`` for the openid (and unionid, when the mini-program and
the official account share an open platform account) and a session_key that
stays on the server. A member already bound through the official account is
recognised by the unionid and linked without asking again::

    result = await login(ctx, code, ip="1.2.3.4")
    result.token, result.member
    member = await current_member(ctx, session)                  # active members only
    member = await current_member(ctx, session, former_ok=True)  # also members who left

Members who left (state other than ``active``: transferred out, stopped,
deceased) lose their tokens when the state changes (``members.set_state``) and
may sign in again, but such a session reaches only their own profile and
history: :func:`current_member` refuses them everywhere else (403
``member_inactive``). Each request reads the member, so a token that escaped
revocation changes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from models import members as members_model
from models.enums import MEMBER_STATES
from wxbackend.context import AppContext
from wxbackend.errors import (
    DomainError,
    Forbidden,
    InvalidInput,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from wxbackend.services.accounts import audit, mpsessions
from wxbackend.services.accounts.access import Actor
from wxbackend.services.accounts.mpsessions import MemberSession
from wxbackend.services.orgs import binding
from wxbackend.services.orgs.members import PHONE
from wxbackend.wechat.client import mp_client
from wxbackend.wechat.errors import CodeBlocked, CodeRateLimited, InvalidCode, WeChatError
from wxbackend.wechat.wxa_crypto import OpenDataError, decrypt_open_data


@dataclass
class LoginResult:
    token: str
    member: dict[str, Any] | None


async def login(ctx: AppContext, code: str, ip: str) -> LoginResult:
    # WeChat's codes are printable ASCII; anything else never reaches WeChat.
    if not re.fullmatch(r"[!-~]{1,128}", code or ""):
        raise InvalidInput("bad_code", "登录凭证格式不正确")
    try:
        session = await mp_client(ctx).code2session(code)
    except InvalidCode:
        raise Unauthorized("code_invalid", "登录凭证无效或已使用，请重新登录") from None
    except CodeRateLimited:
        raise TooManyRequests("code_rate_limited", "登录过于频繁，请一分钟后再试", retry_after=60) from None
    except CodeBlocked:
        raise Forbidden("wechat_blocked", "微信判定该账号存在风险，暂时无法登录") from None
    except WeChatError:
        raise Unavailable("wechat_unavailable", "微信服务暂时不可用，请稍后再试") from None
    openid, unionid = session["openid"], session.get("unionid")
    member = await members_model.by_openid(ctx.db, "mp_openid", openid)
    if member is None and unionid:
        member = await binding.link_same_wechat_user(ctx, "mp", openid, unionid, ip)
    token = await mpsessions.open_session(ctx, openid=openid, unionid=unionid,
                                          session_key=session["session_key"],
                                          member_id=member["_id"] if member else None,
                                          member_state=member["state"] if member else "active")
    return LoginResult(token, member)


async def bind(ctx: AppContext, session: MemberSession, *, name: str, id_card: str, phone: str,
               ip: str) -> dict[str, Any]:
    """The same binding rules as the official account's page (services.binding)."""
    member = await binding.bind(ctx, "mp", session.openid, session.unionid, name, id_card, phone, ip)
    await mpsessions.attach_member(ctx, session, member["_id"])
    return member


def inactive_error(state: str) -> Forbidden:
    label = MEMBER_STATES.get(state, state)
    return Forbidden("member_inactive", f"您的党员档案状态为“{label}”，只能查看本人信息和动态。"
                                        "如有疑问请联系所在党支部。")


async def current_member(ctx: AppContext, session: MemberSession, *,
                         former_ok: bool = False) -> dict[str, Any]:
    """The member behind a bound session, still bound to this openid, in the state the
    session was opened in, and active unless ``former_ok`` (own profile and history)."""
    member = await members_model.get(ctx.db, session.member_id) if session.member_id else None
    if (member is None or member.get("mp_openid") != session.openid
            or (member["state"] == "active") != (session.member_state == "active")):
        # Unbound, or the state changed since sign-in (and the token escaped revocation):
        # signing in again gives a session of the right kind.
        await mpsessions.revoke(ctx, session)
        raise Unauthorized("token_invalid", "登录已失效，请重新登录")
    if member["state"] != "active" and not former_ok:
        raise inactive_error(member["state"])
    return member


async def verify_phone(ctx: AppContext, session: MemberSession, member: dict[str, Any], *,
                       code: str | None = None, encrypted_data: str | None = None,
                       iv: str | None = None) -> str:
    """Check the member's phone against the number WeChat vouches for.

    Either the new getPhoneNumber ``code`` or the legacy ``encryptedData`` +
    ``iv`` (decrypted with the session key). A record without a phone takes
    the verified number; a record with another number is refused, since only
    the branch may change a registered number. Returns "verified" or "recorded".
    """
    phone = await _vouched_phone(ctx, session, code, encrypted_data, iv)
    bidx = ctx.cipher.blind_index(phone, "phone")
    now = ctx.clock.now()
    if member.get("phone_bidx") and member["phone_bidx"] != bidx:
        raise DomainError("phone_differs", "微信绑定的手机号与党员档案不一致，请联系支部书记更新档案")
    changes: dict[str, Any] = {"phone_verified_at": now, "updated_at": now}
    outcome = "verified"
    if not member.get("phone_bidx"):
        changes.update({"phone_enc": ctx.cipher.encrypt(phone, purpose="phone"), "phone_bidx": bidx})
        outcome = "recorded"
    await members_model.update_if(ctx.db, member["_id"], {"phone_bidx": member.get("phone_bidx")},
                                  {"$set": changes})
    me = Actor(id=member["_id"], name=f"{member['name']}（本人·小程序）")
    await audit.record(ctx, me, "member.update", "member", member["_id"], member["name"],
                       member["org_ancestors"], {"fields": ["phone"], "how": "getPhoneNumber"})
    return outcome


async def _vouched_phone(ctx: AppContext, session: MemberSession, code: str | None,
                         encrypted_data: str | None, iv: str | None) -> str:
    if code:
        try:
            info = await mp_client(ctx).get_user_phone_number(code)
        except InvalidCode:
            raise InvalidInput("phone_code_invalid", "手机号授权已失效，请重新授权") from None
        except WeChatError:
            raise Unavailable("wechat_unavailable", "微信服务暂时不可用，请稍后再试") from None
    elif encrypted_data and iv:
        try:
            info = decrypt_open_data(session.session_key, encrypted_data, iv,
                                     appid=ctx.settings.wechat.mp_appid)
        except OpenDataError:
            raise InvalidInput("phone_data_invalid", "手机号数据无法解密，请重新授权") from None
    else:
        raise InvalidInput("phone_missing", "请提供手机号授权凭证")
    phone = str(info.get("purePhoneNumber") or "")
    if str(info.get("countryCode", "86")) != "86" or not PHONE.match(phone):
        raise DomainError("phone_unsupported", "仅支持中国大陆手机号")
    return phone
