"""The callback refuses bad input and survives faults; retries run effects once.

Each refusal asserts the status *and* that nothing was processed (no dedup
claim in Redis, no follower recorded).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time

import httpx
import pytest
from wechatpy.crypto import WeChatCrypto

from models import wechat as followers_model
from tests.conftest import make_settings
from tests.wechat.helpers import (
    OA,
    decrypt_reply,
    event_xml,
    next_msg_id,
    plain_request,
    post,
    resign,
    safe_request,
    say,
    sha1_sorted,
    text_xml,
)
from wxbackend.app import make_app
from wxbackend.capability import Capability, ChatRoute
from wxbackend.context import AppContext
from wxbackend.embedded import free_port
from wxbackend.wechat.router import Text

# Test-only handlers that count how often their effects ran.
RUNS: dict[str, int] = {}


async def _counting(ctx, msg):
    RUNS[msg.openid] = RUNS.get(msg.openid, 0) + 1
    await asyncio.sleep(0.2)  # long enough for concurrent deliveries to overlap
    return Text(f"第{RUNS[msg.openid]}次")


async def _counting_click(ctx, msg):
    RUNS[msg.openid + msg.key] = RUNS.get(msg.openid + msg.key, 0) + 1
    return Text("计数")


async def _slow(ctx, msg):
    await asyncio.sleep(1.0)
    RUNS["slow:" + msg.openid] = 1
    return Text("迟到的回复")


@pytest.fixture
def extra_capabilities():
    return (Capability("test_chat", chat=(ChatRoute.keyword("测试计数", _counting),
                                          ChatRoute.menu_key("TEST_COUNT", _counting_click),
                                          ChatRoute.keyword("测试慢", _slow))),)


async def nothing_processed(ctx) -> bool:
    return await ctx.redis.keys("wx:oa:dedup:*") == []


def plain_only(ctx) -> None:
    """The account without an EncodingAESKey: only then is plain mode accepted."""
    ctx.settings.wechat.oa_aes_key = ""


# -- signatures and parameters --------------------------------------------------

async def test_wrong_signature_is_refused_and_nothing_runs(ctx, oa_url):
    plain_only(ctx)
    query, body = plain_request(OA, event_xml("o-sig", "subscribe"))
    query["signature"] = "f" * 40
    response = await post(oa_url, query, body)
    assert response.status_code == 403
    assert await nothing_processed(ctx)
    assert await followers_model.get(ctx.db, "o-sig") is None


@pytest.mark.parametrize("make", [plain_request, safe_request], ids=["plain", "safe"])
async def test_a_replay_older_than_the_window_is_refused_and_nothing_runs(ctx, oa_url, make):
    """A captured, correctly signed delivery sent again after the dedup keys expired."""
    if make is plain_request:
        plain_only(ctx)
    stale = str(int(time.time()) - ctx.settings.wechat.callback_max_skew_seconds - 60)
    query, body = make(OA, event_xml("o-replay", "subscribe"))
    query = {**query, "timestamp": stale}
    query["signature"] = sha1_sorted(OA.token, stale, query["nonce"])
    if "msg_signature" in query:
        encrypt = body.decode().split("<Encrypt><![CDATA[")[1].split("]]>")[0]
        query["msg_signature"] = sha1_sorted(OA.token, stale, query["nonce"], encrypt)
    response = await post(oa_url, query, body)
    assert (response.status_code, response.text) == (403, "stale_timestamp")
    assert await nothing_processed(ctx)
    assert await followers_model.get(ctx.db, "o-replay") is None


async def test_wrong_msg_signature_is_refused_and_nothing_runs(ctx, oa_url):
    query, body = safe_request(OA, event_xml("o-msig", "subscribe"))
    query["msg_signature"] = query["signature"]  # a valid plain signature is not a msg_signature
    response = await post(oa_url, query, body)
    assert response.status_code == 403
    assert await nothing_processed(ctx)
    assert await followers_model.get(ctx.db, "o-msig") is None


@pytest.mark.parametrize("missing", ["timestamp", "nonce", "signature"])
async def test_missing_plain_parameters_are_400(ctx, oa_url, missing):
    plain_only(ctx)
    query, body = plain_request(OA, text_xml("o-miss", "帮助"))
    del query[missing]
    response = await post(oa_url, query, body)
    assert response.status_code == 400
    assert await nothing_processed(ctx)


@pytest.mark.parametrize("missing", ["timestamp", "nonce", "msg_signature"])
async def test_missing_safe_mode_parameters_are_400(ctx, oa_url, missing):
    query, body = safe_request(OA, text_xml("o-miss", "帮助"))
    del query[missing]
    response = await post(oa_url, query, body)
    assert response.status_code == 400
    assert await nothing_processed(ctx)


async def test_url_verification_needs_every_parameter(ctx, oa_url):
    async with httpx.AsyncClient() as http:
        response = await http.get(oa_url + "/wechat/oa", params={"signature": "x", "timestamp": "1"})
    assert response.status_code == 400


async def test_url_verification_in_safe_mode_decrypts_the_echostr(ctx, oa_url):
    crypto = WeChatCrypto(OA.token, OA.aes_key, OA.appid)
    envelope = crypto.encrypt_message("8931204672", "5551234", "1714000000")
    import xmltodict

    fields = xmltodict.parse(envelope)["xml"]
    query = {"msg_signature": fields["MsgSignature"], "timestamp": "1714000000", "nonce": "5551234",
             "echostr": fields["Encrypt"]}
    async with httpx.AsyncClient() as http:
        ok = await http.get(oa_url + "/wechat/oa", params=query)
        bad = await http.get(oa_url + "/wechat/oa", params={**query, "msg_signature": "0" * 40})
    assert (ok.status_code, ok.text) == (200, "8931204672")
    assert bad.status_code == 403


# -- size and XML safety -------------------------------------------------------------

async def test_body_over_the_limit_is_413_by_content_length(ctx, oa_url):
    xml = text_xml("o-big", "帮助").replace("</xml>", " " * 70_000 + "</xml>")
    response = await post(oa_url, *plain_request(OA, xml))
    assert response.status_code == 413
    assert await nothing_processed(ctx)


async def test_body_over_the_limit_is_413_when_chunked_without_length(ctx, oa_url):
    xml = text_xml("o-big", "帮助").replace("</xml>", " " * 70_000 + "</xml>")
    query, body = plain_request(OA, xml)

    async def chunks():
        for i in range(0, len(body), 8192):
            yield body[i:i + 8192]

    async with httpx.AsyncClient() as http:
        response = await http.post(oa_url + "/wechat/oa", params=query, content=chunks())
    assert response.status_code == 413
    assert await nothing_processed(ctx)


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<xml><ToUserName><![CDATA[gh_x]]></ToUserName><FromUserName><![CDATA[o-lol]]></FromUserName>
<CreateTime>1</CreateTime><MsgType><![CDATA[text]]></MsgType><Content>&lol9;</Content>
<MsgId>77</MsgId></xml>"""

XXE = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE xml [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
<xml><ToUserName><![CDATA[gh_x]]></ToUserName><FromUserName><![CDATA[o-xxe]]></FromUserName>
<CreateTime>1</CreateTime><MsgType><![CDATA[text]]></MsgType><Content>&xxe;</Content>
<MsgId>78</MsgId></xml>"""

PARAMETER_ENTITY = """<!doctype xml [<!ENTITY % p SYSTEM "http://127.0.0.1:1/evil.dtd"> %p;]>
<xml><FromUserName>o-pe</FromUserName><MsgType>text</MsgType><CreateTime>1</CreateTime></xml>"""


@pytest.mark.parametrize("payload", [BILLION_LAUGHS, XXE, PARAMETER_ENTITY],
                         ids=["billion-laughs", "xxe", "parameter-entity"])
@pytest.mark.parametrize("mode", ["plain", "safe-envelope", "safe-plaintext"])
async def test_doctype_and_entities_are_refused(ctx, oa_url, payload, mode):
    if mode == "plain":
        plain_only(ctx)
        query, body = plain_request(OA, payload)
    elif mode == "safe-envelope":
        query, body = safe_request(OA, text_xml("o-env", "帮助"))
        body = payload.replace("</xml>", "<Encrypt>x</Encrypt></xml>").encode()
    else:  # properly encrypted and signed, the danger inside
        query, body = safe_request(OA, payload)
    started = time.monotonic()
    response = await post(oa_url, query, body)
    assert response.status_code == 400
    assert time.monotonic() - started < 2  # refused, not expanded
    assert await nothing_processed(ctx)


async def test_utf16_body_cannot_smuggle_a_doctype(ctx, oa_url):
    plain_only(ctx)
    query, _ = plain_request(OA, "")
    response = await post(oa_url, query, XXE.replace("UTF-8", "UTF-16").encode("utf-16"))
    assert response.status_code == 400
    assert await nothing_processed(ctx)


async def test_malformed_xml_is_400(ctx, oa_url):
    plain_only(ctx)
    for body in ("<xml><FromUserName>o</FromUserName>", "not xml at all", "<xml></xml>",
                 "<other><MsgType>text</MsgType></other>"):
        response = await post(oa_url, *plain_request(OA, body))
        assert response.status_code == 400, body
    assert await nothing_processed(ctx)


# -- safe-mode ciphertext -------------------------------------------------------------

@pytest.mark.parametrize("encrypt", [
    "!!!not-base64!!!",
    "QUJD",  # base64 of 3 bytes: not whole AES blocks
    base64.b64encode(os.urandom(32)).decode().rstrip("="),  # padding stripped
    base64.b64encode(os.urandom(64)).decode(),  # garbage: PKCS#7 padding check fails
], ids=["not-base64", "short", "no-padding", "bad-pkcs7"])
async def test_broken_ciphertext_is_400(ctx, oa_url, encrypt):
    query, body = resign(OA, *safe_request(OA, text_xml("o-enc", "帮助")), encrypt)
    response = await post(oa_url, query, body)
    assert response.status_code == 400
    assert await nothing_processed(ctx)


async def test_ciphertext_for_another_appid_is_refused(ctx, oa_url):
    query, body = safe_request(OA, text_xml("o-app", "帮助"), appid="wxsomebodyelse000")
    response = await post(oa_url, query, body)
    assert response.status_code == 403
    assert await nothing_processed(ctx)


async def test_safe_mode_reply_is_encrypted_and_signed(ctx, oa_url):
    response = await post(oa_url, *safe_request(OA, text_xml("o-reply", "帮助")))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    reply = decrypt_reply(OA, response.text)  # checks Encrypt, MsgSignature, TimeStamp, Nonce
    assert reply["ToUserName"] == "o-reply" and reply["FromUserName"] == OA.original_id
    assert "【我的支部】" in reply["Content"]


# -- unknown messages ------------------------------------------------------------------

async def test_unknown_msg_type_and_event_answer_success_and_are_logged(ctx, oa_url, caplog):
    caplog.set_level(logging.INFO, logger="wxbackend.wechat.callback")
    odd_type = text_xml("o-odd", "x").replace("[text]", "[hologram]")
    odd_event = event_xml("o-odd", "teleport", "K")
    for xml in (odd_type, odd_event):
        response = await post(oa_url, *safe_request(OA, xml))
        assert (response.status_code, response.text) == (200, "success")
    logged = [r for r in caplog.records if r.getMessage() == "unhandled official-account message"]
    assert [(r.fields["msg_type"], r.fields["event"]) for r in logged] == [
        ("hologram", None), ("event", "teleport")]


# -- retries and concurrency -------------------------------------------------------------

async def test_a_retry_gets_the_same_reply_and_runs_nothing_again(ctx, oa_url):
    xml = text_xml("o-retry", "测试计数", next_msg_id())
    first = await say(oa_url, xml)
    second = await say(oa_url, xml)  # WeChat's retry: same MsgId, new timestamp/nonce
    assert RUNS["o-retry"] == 1
    assert first["Content"] == second["Content"] == "第1次"
    third = await say(oa_url, text_xml("o-retry", "测试计数", next_msg_id()))
    assert third["Content"] == "第2次"  # a new MsgId is a new message


async def test_twenty_concurrent_identical_deliveries_run_effects_once(ctx, oa_url):
    xml = text_xml("o-burst", "测试计数", next_msg_id())
    replies = await asyncio.gather(*(say(oa_url, xml) for _ in range(20)))
    assert RUNS["o-burst"] == 1
    assert {r["Content"] for r in replies} == {"第1次"}


async def test_events_are_deduplicated_by_sender_time_event_and_key(ctx, oa_url):
    at = int(time.time())
    click = event_xml("o-ev", "CLICK", "TEST_COUNT", create_time=at)
    await say(oa_url, click)
    await say(oa_url, click)
    assert RUNS["o-evTEST_COUNT"] == 1
    await say(oa_url, event_xml("o-ev", "CLICK", "TEST_COUNT", create_time=at + 1))
    assert RUNS["o-evTEST_COUNT"] == 2
    await say(oa_url, event_xml("o-ev2", "CLICK", "TEST_COUNT", create_time=at))
    assert RUNS["o-ev2TEST_COUNT"] == 1  # another sender at the same second
    # Same sender and second, different event: a follow is not a retry of the click.
    assert (await say(oa_url, event_xml("o-ev", "subscribe", create_time=at)))["MsgType"] == "text"
    follower = await followers_model.get(ctx.db, "o-ev")
    await say(oa_url, event_xml("o-ev", "subscribe", create_time=at))  # retry
    assert (await followers_model.get(ctx.db, "o-ev"))["followed_at"] == follower["followed_at"]


# -- time budget ---------------------------------------------------------------------------

async def test_slow_handler_answers_success_at_once_and_finishes_in_background(ctx, oa_url, caplog):
    caplog.set_level(logging.INFO)
    ctx.settings.wechat.callback_budget_seconds = 0.2
    ctx.settings.wechat.api_base = f"http://127.0.0.1:{free_port()}"  # nobody listens: send fails
    ctx.settings.wechat.api_retries = 0
    xml = text_xml("o-slow", "测试慢", next_msg_id())
    started = time.monotonic()
    assert await say(oa_url, xml) is None  # "success"
    assert time.monotonic() - started < 0.9
    assert await say(oa_url, xml) is None  # WeChat's retry: success, nothing runs again
    from wxbackend.wechat import background

    await background.drain(ctx)
    assert RUNS["slow:o-slow"] == 1
    failed = [r for r in caplog.records if r.getMessage() == "late reply not delivered"]
    assert len(failed) == 1 and failed[0].fields["openid"] == "o-slow"


# -- dependencies down --------------------------------------------------------------------

async def test_redis_down_the_callback_still_answers(ctx, servers, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    port = free_port()  # nothing listens there
    broken_settings = make_settings(servers, tmp_path, WXB_WECHAT_OA_APPID=OA.appid,
                                    WXB_WECHAT_OA_TOKEN=OA.token, WXB_WECHAT_OA_AES_KEY=OA.aes_key)
    broken = await AppContext.connect(broken_settings, servers.mongodb_uri, f"redis://127.0.0.1:{port}/0",
                                      database=ctx.db.name, registry=ctx.registry)
    app_port = free_port()
    server = make_app(broken).listen(app_port, "127.0.0.1")
    try:
        url = f"http://127.0.0.1:{app_port}"
        reply = await say(url, text_xml("o-noredis", "帮助", next_msg_id()))
        assert "【帮助】" in reply["Content"]
        followed = await post(url, *safe_request(OA, event_xml("o-noredis", "subscribe")))
        assert followed.status_code == 200
    finally:
        server.stop()
        await server.close_all_connections()
        await broken.close()
    assert any(r.getMessage().startswith("callback dedup unavailable") for r in caplog.records)
    assert (await followers_model.get(ctx.db, "o-noredis"))["following"] is True


async def test_mongodb_down_the_member_gets_a_clear_text(ctx, servers, tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    broken_settings = make_settings(servers, tmp_path, WXB_WECHAT_OA_APPID=OA.appid,
                                    WXB_WECHAT_OA_TOKEN=OA.token, WXB_WECHAT_OA_AES_KEY=OA.aes_key,
                                    WXB_MONGODB_SERVER_SELECTION_TIMEOUT_MS="300")
    broken = await AppContext.connect(broken_settings, f"mongodb://127.0.0.1:{free_port()}",
                                      servers.redis_url, database=ctx.db.name, registry=ctx.registry)
    app_port = free_port()
    server = make_app(broken).listen(app_port, "127.0.0.1")
    try:
        reply = await say(f"http://127.0.0.1:{app_port}", text_xml("o-nomongo", "我的支部", next_msg_id()))
    finally:
        server.stop()
        await server.close_all_connections()
        await broken.close()
    assert reply["Content"] == "系统繁忙，请稍后再试。"
    assert any(r.getMessage() == "chat handler failed" for r in caplog.records)
