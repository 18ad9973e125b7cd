"""The official-account callback: verify, decrypt, dedupe, dispatch, answer in time.

``GET /wechat/oa`` proves the URL to WeChat (echo ``echostr``); ``POST``
delivers messages and events in safe mode (``encrypt_type=aes`` +
``msg_signature``, encrypted answers) or, only when no EncodingAESKey is
configured, plain mode (``signature``). The handler in
``handlers/wechat_oa.py`` only hands over the query and the body::

    echostr = verify_url(ctx, {"signature": ..., "timestamp": ..., "nonce": ..., "echostr": ...})
    answer = await handle_post(ctx, query, body, content_length, answer_early=send_success)
    answer.body, answer.content_type          # "success" or (encrypted) reply XML
    # None: over budget, send_success() was called meanwhile (wxbackend.wechat.budget)

Each message is answered at most once with effects: the dedup claim is taken
before the handler runs (:mod:`wxbackend.wechat.dedup`). A handler that needs
more than ``[wechat] callback_budget_seconds`` is answered ``success`` and
finishes in the background, its reply sent later as a customer-service
message (:mod:`wxbackend.wechat.budget`, :mod:`wxbackend.wechat.background`). Refused requests raise
:class:`~wxbackend.wechat.inbound.CallbackError` with the HTTP status to answer.

Who may speak (security hole 2 of the review): plain mode's ``signature``
covers timestamp and nonce, not the body, so one copied callback URL (an
access log, a proxy) would let anyone post any message as any openid while
the timestamp is fresh. Hence: with an AES key, only ``msg_signature``-checked
ciphertext is accepted (WeChat's compatible mode sends both; its clear fields
are ignored); each signed ``(timestamp, nonce)`` carries one message only
(:class:`~wxbackend.wechat.dedup.Delivery`); ``ToUserName`` must be
``[wechat] oa_original_id`` when that is set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from wxbackend.context import AppContext
from wxbackend.wechat import background
from wxbackend.wechat.budget import Budgets
from wxbackend.wechat.dedup import Claim, Dedup, Delivery, dedup_key
from wxbackend.wechat.inbound import (
    CallbackCrypto,
    CallbackError,
    bad_request,
    decode_body,
    envelope_encrypt,
    parse_inbound,
)
from wxbackend.wechat.router import Inbound, Reply, Text, router_of

log = logging.getLogger("wxbackend.wechat.callback")

SUCCESS = "success"
# What a member sees when a handler failed (rather than WeChat's "该公众号暂时无法提供服务").
BUSY = Text("系统繁忙，请稍后再试。")
MAX_PARAM = 128


@dataclass(frozen=True)
class Answer:
    body: str
    content_type: str = "text/plain; charset=UTF-8"


def crypto_for(ctx: AppContext) -> CallbackCrypto:
    """The account's crypto, built once per context (it parses the AES key)."""
    wx = ctx.settings.wechat
    if not wx.oa_token or not wx.oa_appid:
        # An empty token would make every signature computable by anyone.
        raise CallbackError(503, "oa_not_configured")
    config = (wx.oa_token, wx.oa_aes_key, wx.oa_appid)
    crypto = ctx.state(CallbackCrypto, lambda: CallbackCrypto(*config))
    if crypto.config != config:  # the settings changed (tests do)
        crypto = ctx.replace_state(CallbackCrypto(*config))
    return crypto


def _param(query: Mapping[str, str], name: str) -> str:
    value = query.get(name, "")
    if not value or len(value) > MAX_PARAM:
        raise bad_request(f"missing_{name}")
    return value


def verify_url(ctx: AppContext, query: Mapping[str, str]) -> str:
    """The URL check of WeChat's server configuration page: the echostr, if signed."""
    timestamp, nonce = _param(query, "timestamp"), _param(query, "nonce")
    echostr = query.get("echostr", "")
    if not echostr or len(echostr) > 4096:
        raise bad_request("missing_echostr")
    crypto = crypto_for(ctx)
    if query.get("msg_signature"):
        # Safe mode: the echostr is encrypted and signed like a message body.
        crypto.check_msg_signature(query["msg_signature"], timestamp, nonce, echostr)
        return crypto.decrypt(echostr)
    crypto.check_signature(_param(query, "signature"), timestamp, nonce)
    return echostr


def check_fresh(ctx: AppContext, timestamp: str) -> int:
    """Refuse a signed delivery replayed later than the dedup keys remember it.

    WeChat retries within seconds; a captured request sent again after the
    dedup TTL would otherwise run its effects twice. The signature covers the
    timestamp, so it cannot be moved. The window must stay shorter than
    ``dedup_ttl_seconds``: within it dedup catches a replay, beyond it this does.

    Returns how long the delivery's (timestamp, nonce) must be remembered: until
    the timestamp leaves the window (the dedup TTL when the window is off).
    """
    if not (timestamp.isascii() and timestamp.isdigit()):
        raise bad_request("bad_timestamp")
    window = ctx.settings.wechat.callback_max_skew_seconds
    if window <= 0:
        return ctx.settings.wechat.dedup_ttl_seconds
    # WeChat's signature timestamps are wall-clock seconds, not calendar time: time.time().
    now = time.time()
    if abs(now - int(timestamp)) > window:
        raise CallbackError(403, "stale_timestamp")
    return int(int(timestamp) + window - now) + 1


def check_account(ctx: AppContext, msg: Inbound) -> None:
    """Refuse a message addressed to another official account (ToUserName, gh_...).

    Checked on the message itself (decrypted in safe mode), never on the clear
    envelope, which nobody signs. An empty ``oa_original_id`` is not checked.
    """
    expected = ctx.settings.wechat.oa_original_id
    if expected and msg.account != expected:
        raise CallbackError(403, "wrong_account")


def verified_message(crypto: CallbackCrypto, query: Mapping[str, str], timestamp: str, nonce: str,
                     body: bytes) -> str:
    """The message XML of a delivery, from a part its signature covers."""
    mode = query.get("encrypt_type", "raw").lower()
    if crypto.safe_mode:
        # An EncodingAESKey is set: plain mode's signature leaves the body unsigned,
        # so only msg_signature over Encrypt authenticates. Compatible mode's
        # clear fields in the envelope are never read.
        if mode != "aes":
            raise CallbackError(403, "safe_mode_required")
        msg_signature = _param(query, "msg_signature")
        encrypt = envelope_encrypt(decode_body(body))
        crypto.check_msg_signature(msg_signature, timestamp, nonce, encrypt)
        return crypto.decrypt(encrypt)
    if mode == "aes":
        raise bad_request("safe_mode_not_configured")
    if mode != "raw":
        raise bad_request("unknown_encrypt_type")
    crypto.check_signature(_param(query, "signature"), timestamp, nonce)
    return decode_body(body)


def check_size(ctx: AppContext, content_length: str | None, body: bytes) -> None:
    """413 before any parsing: by the declared length and by what actually came."""
    limit = ctx.settings.wechat.callback_max_bytes
    declared = int(content_length) if content_length and content_length.isdigit() else 0
    if declared > limit or len(body) > limit:
        raise CallbackError(413, "body_too_large")


async def handle_post(ctx: AppContext, query: Mapping[str, str], body: bytes,
                      content_length: str | None, answer_early: Callable[[], None]) -> Answer | None:
    """Verify and decrypt one delivery, answer it (at most once with effects).

    None: the handler ran over budget and ``answer_early`` (which must send
    ``success``) was called for it meanwhile.
    """
    check_size(ctx, content_length, body)
    timestamp, nonce = _param(query, "timestamp"), _param(query, "nonce")
    crypto = crypto_for(ctx)
    xml = verified_message(crypto, query, timestamp, nonce, body)
    remember_seconds = check_fresh(ctx, timestamp)
    msg = parse_inbound(xml)
    check_account(ctx, msg)
    delivery = Delivery.of(timestamp, nonce, xml, remember_seconds)
    try:
        reply_xml = await answer(ctx, msg, answer_early, delivery)
    except AnsweredEarly:
        return None
    if reply_xml is None:
        # "success" needs no encryption even in safe mode (official doc).
        return Answer(SUCCESS)
    body_out = crypto.encrypt_reply(reply_xml) if crypto.safe_mode else reply_xml
    return Answer(body_out, "application/xml; charset=UTF-8")


async def answer(ctx: AppContext, msg: Inbound, answer_early: Callable[[], None],
                 delivery: Delivery | None = None) -> str | None:
    """The reply XML for ``msg`` (None: "success"), running its effects at most once.

    Raises :class:`AnsweredEarly` when the handler ran over budget and
    ``answer_early`` has sent ``success`` for it, ``CallbackError`` 403 when
    ``delivery``'s (timestamp, nonce) already carried another message.

    Retries against nonce reuse: WeChat's retry of a message may come with a
    new (timestamp, nonce) or, as a resent request, with the same one; either
    way it is the same message, so it passes and the MsgId dedup answers it
    with the stored reply. A pair seen with a *different* message is refused
    before anything is claimed: a signed URL carries one message only, which
    is what makes a copied plain-mode URL worthless. "Same" is the digest of
    the message XML (decrypted), so a retry re-encrypted under the same pair
    still counts as one.
    """
    known = router_of(ctx).is_known(msg)
    dedup = Dedup(ctx)
    # Unhandled messages have nothing to dedupe, but their pair is remembered all the same.
    key = dedup_key(msg) if known else None
    state, stored = await dedup.claim(key, delivery)
    if state is Claim.REUSED:
        raise CallbackError(403, "nonce_reused")
    if not known:
        log.info("unhandled official-account message", extra={"fields": {
            "msg_type": msg.msg_type, "event": msg.event or None, "openid": msg.openid}})
        return None
    if state is Claim.DONE:
        return stored
    if state is Claim.PENDING:
        # A concurrent delivery runs it; its answer, if it comes in time, is ours too.
        return await dedup.wait(key, ctx.settings.wechat.callback_budget_seconds)
    try:
        reply = await _within_budget(ctx, msg, answer_early)
    except AnsweredEarly:
        if state is Claim.NEW:
            dedup.store(key, None)  # a retry gets "success", as the first delivery did
        raise
    reply_xml = reply.render(msg) if reply is not None else None
    if state is Claim.NEW:
        dedup.store(key, reply_xml)
    return reply_xml


class AnsweredEarly(Exception):
    """The handler ran over budget: ``success`` went out for it, its reply follows later."""


async def _within_budget(ctx: AppContext, msg: Inbound, answer_early: Callable[[], None]) -> Reply | None:
    budgets = Budgets.of(ctx)
    ticket = budgets.start(ctx.settings.wechat.callback_budget_seconds, answer_early)
    reply = await _dispatch(ctx, msg)
    if budgets.finish(ticket):
        return reply
    background.spawn(ctx, background.send_late_reply(ctx, msg.openid, reply), "late reply")
    raise AnsweredEarly


async def _dispatch(ctx: AppContext, msg: Inbound) -> Reply | None:
    try:
        return await router_of(ctx).dispatch(ctx, msg)
    except Exception:
        # The member gets a clear answer; the cause goes to the log.
        log.exception("chat handler failed", extra={"fields": {
            "msg_type": msg.msg_type, "event": msg.event or None}})
        return BUSY
