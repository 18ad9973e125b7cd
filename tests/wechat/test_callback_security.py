"""Who may speak to ``/wechat/oa`` (review, security hole 2), through the real endpoint.

The attack: plain mode's ``signature`` covers timestamp and nonce, not the
body, so one copied callback URL let anyone post any message as any openid
while the timestamp was fresh (read a member's branch with 我的支部, check
them in with a SCAN ``checkin:<meeting>``). Each case asserts the refusal
(status and code) and that nothing changed: no ``wx:oa:*`` key written or
altered (dedup claims, remembered nonces), no follower, no check-in.

This module's account has ``[wechat] oa_original_id`` set, so the ToUserName
check runs on every message here.
"""

from __future__ import annotations

import asyncio
import secrets
import time

import httpx
import pytest
import xmltodict
from wechatpy.crypto import WeChatCrypto

from models import wechat as followers_model
from tests.conftest import make_settings
from tests.meetings_helpers import add_people, bind, build_town, live_meeting, reload
from tests.wechat.helpers import (
    OA,
    account_env,
    decrypt_reply,
    event_xml,
    next_msg_id,
    plain_request,
    post,
    safe_request,
    sha1_sorted,
    text_xml,
)
from wxbackend.autopipe import AutoPipeline
from wxbackend.capability import Capability, ChatRoute
from wxbackend.services.meetings import checkin_codes
from wxbackend.wechat.router import Text

RUNS: dict[str, int] = {}


async def _counting(ctx, msg):
    RUNS[msg.openid] = RUNS.get(msg.openid, 0) + 1
    await asyncio.sleep(0.2)  # long enough for a concurrent retry to overlap
    return Text(f"第{RUNS[msg.openid]}次")


@pytest.fixture(autouse=True)
def _fresh_runs():
    RUNS.clear()


@pytest.fixture
def extra_capabilities():
    return (Capability("test_security", chat=(ChatRoute.keyword("测试计数", _counting),)),)


@pytest.fixture
def settings(servers, tmp_path, oa_port):
    return make_settings(servers, tmp_path, **account_env(
        OA, WXB_WECHAT_OA_ORIGINAL_ID=OA.original_id, WXB_HTTP_PUBLIC_URL=f"http://127.0.0.1:{oa_port}"))


@pytest.fixture
async def victim(ctx):
    """A bound member ("o-victim") and a meeting of their branch open for check-in."""
    town = await build_town(ctx)
    person = (await add_people(ctx, town, 1))[0]
    await bind(ctx, person, "oa", "o-victim")
    return await live_meeting(ctx, town)


def plain_only(ctx) -> None:
    """The account without an EncodingAESKey: only then is plain mode accepted."""
    ctx.settings.wechat.oa_aes_key = ""


def sealed(xml: str, timestamp: str, nonce: str, *, to: str = OA.original_id) -> tuple[dict[str, str], bytes]:
    """A safe-mode delivery of ``xml`` under a chosen (timestamp, nonce), as WeChat would sign it."""
    envelope = xmltodict.parse(WeChatCrypto(OA.token, OA.aes_key, OA.appid)
                               .encrypt_message(xml, nonce, timestamp))["xml"]
    query = {"signature": sha1_sorted(OA.token, timestamp, nonce), "timestamp": timestamp,
             "nonce": nonce, "openid": "x", "encrypt_type": "aes", "msg_signature": envelope["MsgSignature"]}
    body = (f"<xml><ToUserName><![CDATA[{to}]]></ToUserName>"
            f"<Encrypt><![CDATA[{envelope['Encrypt']}]]></Encrypt></xml>")
    return query, body.encode()


def fresh_pair() -> tuple[str, str]:
    return str(int(time.time())), str(secrets.randbelow(10**9))


def checkin_scan(meeting, openid: str = "o-victim") -> str:
    return event_xml(openid, "SCAN", checkin_codes.oa_scene(meeting))


async def callback_keys(ctx) -> dict[bytes, bytes]:
    """Every dedup claim and remembered nonce, with its value (after pending writes landed)."""
    await AutoPipeline.of(ctx).flush()
    keys = await ctx.redis.keys("wx:oa:*")
    return {k: await ctx.redis.get(k) for k in sorted(keys)}


async def nobody_checked_in(ctx, meeting) -> bool:
    stored = await reload(ctx, meeting)
    return stored["attendance"] == {} and stored["counts"].get("present", 0) == 0


# -- plain mode with an AES key configured ------------------------------------------------

def copied_url_without_encryption(xml: str) -> tuple[dict[str, str], bytes]:
    """A genuine safe-mode URL (as logged) stripped of encrypt_type/msg_signature, any body."""
    query, _ = safe_request(OA, text_xml("o-someone", "帮助"))
    return {k: v for k, v in query.items() if k not in ("encrypt_type", "msg_signature")}, xml.encode()


def compatible_mode_body(xml: str) -> tuple[dict[str, str], bytes]:
    """Compatible mode's body (clear fields and Encrypt) sent without encrypt_type."""
    query, _ = copied_url_without_encryption(xml)
    envelope = safe_request(OA, text_xml("o-someone", "帮助"))[1].decode()
    return query, xml.replace("</xml>", envelope[envelope.index("<Encrypt>"):]).encode()


@pytest.mark.parametrize("build", [
    lambda xml: plain_request(OA, xml),
    lambda xml: ({**plain_request(OA, xml)[0], "encrypt_type": "raw"}, xml.encode()),
    copied_url_without_encryption,
    compatible_mode_body,
], ids=["plain", "encrypt_type-raw", "copied-url", "compatible-mode-unflagged"])
async def test_plain_mode_is_refused_when_an_aes_key_is_set(ctx, oa_url, victim, build):
    for xml in (text_xml("o-victim", "我的支部"), checkin_scan(victim), event_xml("o-newcomer", "subscribe")):
        response = await post(oa_url, *build(xml))
        assert (response.status_code, response.text) == (403, "safe_mode_required")
    assert await callback_keys(ctx) == {}
    assert await nobody_checked_in(ctx, victim)
    assert await followers_model.get(ctx.db, "o-newcomer") is None


async def test_compatible_mode_only_the_encrypted_message_counts(ctx, oa_url, victim):
    query, body = safe_request(OA, text_xml("o-sender", "测试计数"))
    clear = "<FromUserName><![CDATA[o-victim]]></FromUserName><MsgType><![CDATA[text]]></MsgType>" \
            "<Content><![CDATA[我的支部]]></Content>"
    body = body.replace(b"<Encrypt>", clear.encode() + b"<Encrypt>")
    response = await post(oa_url, query, body)
    assert response.status_code == 200
    reply = decrypt_reply(OA, response.text)
    assert reply["ToUserName"] == "o-sender" and reply["Content"] == "第1次"
    assert "o-victim" not in RUNS


async def test_url_verification_by_plain_signature_stays_as_wechat_does_it(ctx, oa_url):
    timestamp, nonce = fresh_pair()
    query = {"signature": sha1_sorted(OA.token, timestamp, nonce), "timestamp": timestamp,
             "nonce": nonce, "echostr": "4711"}
    async with httpx.AsyncClient() as http:
        response = await http.get(oa_url + "/wechat/oa", params=query)
    assert (response.status_code, response.text) == (200, "4711")


async def test_control_the_same_scan_properly_sealed_does_check_in(ctx, oa_url, victim):
    """The attacks' payloads are real: sent by WeChat in safe mode, this one checks the member in."""
    response = await post(oa_url, *safe_request(OA, checkin_scan(victim)))
    assert response.status_code == 200
    assert not await nobody_checked_in(ctx, victim)


# -- one message per signed (timestamp, nonce) ---------------------------------------------

async def test_a_pair_reused_with_another_message_is_refused(ctx, oa_url, victim):
    timestamp, nonce = fresh_pair()
    first = await post(oa_url, *sealed(text_xml("o-someone", "帮助"), timestamp, nonce))
    assert first.status_code == 200
    before = await callback_keys(ctx)
    for xml in (checkin_scan(victim), text_xml("o-victim", "我的支部"), event_xml("o-newcomer", "subscribe")):
        response = await post(oa_url, *sealed(xml, timestamp, nonce))
        assert (response.status_code, response.text) == (403, "nonce_reused")
    assert await callback_keys(ctx) == before
    assert await nobody_checked_in(ctx, victim)
    assert await followers_model.get(ctx.db, "o-newcomer") is None


async def test_plain_mode_account_a_copied_url_carries_no_other_message(ctx, oa_url, victim):
    plain_only(ctx)
    query, body = plain_request(OA, text_xml("o-someone", "帮助"))
    assert (await post(oa_url, query, body)).status_code == 200  # WeChat's own delivery
    before = await callback_keys(ctx)
    for xml in (checkin_scan(victim), text_xml("o-victim", "我的支部"), event_xml("o-newcomer", "subscribe")):
        response = await post(oa_url, query, xml.encode())  # the URL from an access log
        assert (response.status_code, response.text) == (403, "nonce_reused")
    assert await callback_keys(ctx) == before
    assert await nobody_checked_in(ctx, victim)
    assert await followers_model.get(ctx.db, "o-newcomer") is None


async def test_a_pair_used_by_an_unhandled_message_is_remembered_too(ctx, oa_url, victim):
    timestamp, nonce = fresh_pair()
    odd = text_xml("o-someone", "x").replace("[text]", "[hologram]")
    first = await post(oa_url, *sealed(odd, timestamp, nonce))
    assert (first.status_code, first.text) == (200, "success")
    response = await post(oa_url, *sealed(checkin_scan(victim), timestamp, nonce))
    assert (response.status_code, response.text) == (403, "nonce_reused")
    assert await ctx.redis.keys("wx:oa:dedup:*") == []
    assert await nobody_checked_in(ctx, victim)


@pytest.mark.parametrize("mode", ["identical-request", "re-encrypted", "plain"])
async def test_a_retry_under_the_same_pair_is_answered_from_the_dedup(ctx, oa_url, mode):
    """WeChat's retry may resend the request as it was: same pair, same message, same answer."""
    timestamp, nonce = fresh_pair()
    xml = text_xml("o-retry", "测试计数", next_msg_id())
    if mode == "plain":
        plain_only(ctx)
        query, body = plain_request(OA, xml)
        deliveries = [(query, body)] * 3
    elif mode == "identical-request":
        deliveries = [sealed(xml, timestamp, nonce)] * 3
    else:  # the same message sealed again: a new random prefix, so another ciphertext
        deliveries = [sealed(xml, timestamp, nonce) for _ in range(3)]
    first = await post(oa_url, *deliveries[0])
    concurrent = await asyncio.gather(*(post(oa_url, *d) for d in deliveries[1:]))
    assert RUNS["o-retry"] == 1
    for response in (first, *concurrent):
        assert response.status_code == 200, response.text
        reply = xmltodict.parse(response.text)["xml"] if mode == "plain" else decrypt_reply(OA, response.text)
        assert reply["Content"] == "第1次"


async def test_a_pair_is_remembered_while_its_timestamp_is_fresh(ctx, oa_url):
    window = ctx.settings.wechat.callback_max_skew_seconds
    timestamp, nonce = str(int(time.time()) - 100), "20261128"
    response = await post(oa_url, *sealed(text_xml("o-ttl", "帮助"), timestamp, nonce))
    assert response.status_code == 200
    ttl = await ctx.redis.ttl(f"wx:oa:nonce:{timestamp}:{nonce}")
    assert window - 100 - 3 <= ttl <= window - 100 + 1


# -- ToUserName -----------------------------------------------------------------------------

async def test_a_message_for_another_account_is_refused(ctx, oa_url, victim):
    for xml in (text_xml("o-victim", "我的支部", to="gh_someoneelse1"),
                event_xml("o-newcomer", "subscribe", to="gh_someoneelse1"),
                checkin_scan(victim).replace(OA.original_id, "gh_someoneelse1")):
        # The clear envelope names our account; the signed message inside does not.
        response = await post(oa_url, *safe_request(OA, xml))
        assert (response.status_code, response.text) == (403, "wrong_account")
    assert await callback_keys(ctx) == {}
    assert await nobody_checked_in(ctx, victim)
    assert await followers_model.get(ctx.db, "o-newcomer") is None


async def test_the_envelope_to_user_name_is_not_what_counts(ctx, oa_url):
    timestamp, nonce = fresh_pair()
    query, body = sealed(text_xml("o-env", "帮助"), timestamp, nonce, to="gh_whatever000")
    response = await post(oa_url, query, body)
    assert response.status_code == 200
    assert decrypt_reply(OA, response.text)["FromUserName"] == OA.original_id


async def test_without_an_original_id_the_account_is_not_checked(ctx, oa_url):
    ctx.settings.wechat.oa_original_id = ""
    response = await post(oa_url, *safe_request(OA, text_xml("o-any", "帮助", to="gh_someoneelse1")))
    assert response.status_code == 200


async def test_the_sandbox_sends_the_configured_original_id(ctx, oa_url, sandbox):
    sandbox.config.callback_url = oa_url + "/wechat/oa"
    assert sandbox.config.oa_original_id == OA.original_id
    await sandbox.follow("o-sandbox")
    said = await sandbox.http.post("/sandbox/users/o-sandbox/say", json={"content": "帮助"})
    result = said.json()
    assert result["error"] is None, result
    assert "【帮助】" in result["reply"]["Content"]
