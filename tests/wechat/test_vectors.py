"""WeChat's official vectors, run through the real ``/wechat/oa`` endpoint.

- the official safe-mode sample (token ``spamtest``, its EncodingAESKey and appid);
- the plain-mode ``signature`` vectors, with the negative case;
- every inbound format of ``mp_message_formats.json``, in plain and safe mode.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import xmltodict

from models import wechat as followers_model
from tests.conftest import make_settings
from tests.wechat.helpers import (
    OA,
    Account,
    account_env,
    decrypt_reply,
    plain_request,
    post,
    safe_request,
)

# ../shared/wechat-vectors next to the repository, as the docs name it.
VECTORS = Path(__file__).resolve().parents[3] / "shared" / "wechat-vectors"
SAMPLE = json.loads((VECTORS / "mp_crypto_official_sample.json").read_text())
PLAIN = json.loads((VECTORS / "mp_signature_plain_vectors.json").read_text())
FORMATS = json.loads((VECTORS / "mp_message_formats.json").read_text())
SAMPLE_ACCOUNT = Account(appid=SAMPLE["appid"], token=SAMPLE["token"],
                         aes_key=SAMPLE["encoding_aes_key"], original_id="gh_10f6c3c3ac5a")


@pytest.fixture
def settings(servers, tmp_path, oa_port):  # this module's account is the sample's
    # WeChat's samples are signed in 2014: the replay window is off for them only.
    return make_settings(servers, tmp_path, WXB_WECHAT_CALLBACK_MAX_SKEW_SECONDS="0", **account_env(
        SAMPLE_ACCOUNT, WXB_HTTP_PUBLIC_URL=f"http://127.0.0.1:{oa_port}"))


def use_account(ctx, account: Account) -> None:
    ctx.settings.wechat.oa_token = account.token
    ctx.settings.wechat.oa_aes_key = account.aes_key
    ctx.settings.wechat.oa_appid = account.appid


@pytest.mark.parametrize("body_key", ["post_body_xml_as_in_sample", "post_body_xml_safe_mode_minimal"])
async def test_official_safe_mode_sample_is_decrypted_and_answered_encrypted(ctx, oa_url, body_key):
    case = SAMPLE["decrypt_case"]
    query = {k: v for k, v in case["query"].items() if not k.startswith("_")}
    response = await post(oa_url, query, case[body_key].encode())
    assert response.status_code == 200, response.text
    reply = decrypt_reply(SAMPLE_ACCOUNT, response.text)
    expected = case["expected_fields"]
    # Our answer goes back to the sender, from the account the message was sent to.
    assert reply["ToUserName"] == expected["FromUserName"]
    assert reply["FromUserName"] == expected["ToUserName"]
    assert reply["MsgType"] == "text"
    assert "【帮助】" in reply["Content"]  # "abcdteT" is no keyword: help, not silence
    # The message was recognised by its MsgId (dedup key of the decrypted message).
    assert await ctx.redis.exists(f"wx:oa:dedup:m:{expected['MsgId']}") == 1


async def test_official_sample_with_a_wrong_msg_signature_is_refused(ctx, oa_url):
    case = SAMPLE["decrypt_case"]
    query = {k: v for k, v in case["query"].items() if not k.startswith("_")}
    query["msg_signature"] = "0" * 40
    response = await post(oa_url, query, case["post_body_xml_safe_mode_minimal"].encode())
    assert response.status_code == 403
    assert await ctx.redis.keys("wx:oa:dedup:*") == []


async def test_official_sample_round_trip_of_the_encrypt_case(ctx, oa_url):
    """The sample's EncryptMsg input, sent as a delivery and answered: round trip."""
    case = SAMPLE["encrypt_case_nondeterministic"]
    query, body = safe_request(SAMPLE_ACCOUNT, case["to_xml"])
    response = await post(oa_url, query, body)
    # A video message from the sample: understood, answered with the help text.
    assert response.status_code == 200
    reply = decrypt_reply(SAMPLE_ACCOUNT, response.text)
    assert reply["ToUserName"] == "gh_7f083739789a"
    assert "暂时无法识别" in reply["Content"]


@pytest.mark.parametrize("vector", PLAIN["vectors"], ids=lambda v: v["source"][:30])
async def test_plain_signature_vectors_verify_the_url(ctx, oa_url, vector):
    use_account(ctx, Account(appid="wxplain", token=vector["token"], aes_key=""))
    echostr = vector.get("echostr", "echo-" + vector["nonce"])
    query = {"signature": vector["signature"], "timestamp": vector["timestamp"],
             "nonce": vector["nonce"], "echostr": echostr}
    async with httpx.AsyncClient() as http:
        response = await http.get(oa_url + "/wechat/oa", params=query)
    assert response.status_code == 200
    assert response.text == echostr


@pytest.mark.parametrize("vector", PLAIN["negative"], ids=lambda v: v["source"][:30])
async def test_plain_signature_negative_vector_is_refused(ctx, oa_url, vector):
    use_account(ctx, Account(appid="wxplain", token=vector["token"], aes_key=""))
    query = {"signature": vector["signature"], "timestamp": vector["timestamp"],
             "nonce": vector["nonce"], "echostr": "12345"}
    async with httpx.AsyncClient() as http:
        response = await http.get(oa_url + "/wechat/oa", params=query)
    assert response.status_code == 403
    assert "12345" not in response.text


async def test_plain_mode_post_with_the_official_doc_signature(ctx, oa_url):
    vector = PLAIN["vectors"][1]
    use_account(ctx, Account(appid="wxplain", token=vector["token"], aes_key=""))
    query = {k: vector[k] for k in ("signature", "timestamp", "nonce")}
    response = await post(oa_url, query, FORMATS["inbound"]["text"].encode())
    assert response.status_code == 200
    reply = xmltodict.parse(response.text)["xml"]  # plain mode answers plain XML
    assert reply["ToUserName"] == "fromUser" and reply["FromUserName"] == "toUser"
    assert "【帮助】" in reply["Content"]


async def test_safe_mode_signature_param_does_not_authenticate_the_body(ctx, oa_url):
    """The doc's safe-mode POST carries a valid ``signature``: it must not be enough."""
    vector = PLAIN["vectors"][2]
    account = Account(appid="wxplain", token=vector["token"], aes_key=OA.aes_key)
    use_account(ctx, account)
    query, body = safe_request(account, FORMATS["inbound"]["text"])
    query.update({k: vector[k] for k in ("signature", "timestamp", "nonce")})
    response = await post(oa_url, query, body)  # msg_signature was made for other ts/nonce
    assert response.status_code == 403
    assert await ctx.redis.keys("wx:oa:dedup:*") == []


INBOUND = {k: v for k, v in FORMATS["inbound"].items() if isinstance(v, str) and v.startswith("<xml>")}


@pytest.mark.parametrize("mode", ["plain", "safe"])
@pytest.mark.parametrize("name", sorted(INBOUND))
async def test_every_inbound_format_is_parsed_through_the_endpoint(ctx, oa_url, name, mode):
    use_account(ctx, OA if mode == "safe" else Account(OA.appid, OA.token, ""))  # plain: no AES key
    xml = INBOUND[name]
    build = plain_request if mode == "plain" else safe_request
    response = await post(oa_url, *build(OA, xml))
    assert response.status_code == 200, response.text
    if response.text == "success":
        reply = None
    elif mode == "plain":
        reply = xmltodict.parse(response.text)["xml"]
    else:
        reply = decrypt_reply(OA, response.text)
    sender = xmltodict.parse(xml)["xml"]["FromUserName"]
    follower = await followers_model.get(ctx.db, sender)
    if name in ("event_unsubscribe", "event_VIEW", "event_LOCATION"):
        assert reply is None  # nothing to say: "success"
    else:
        assert reply is not None and reply["MsgType"] == "text" and reply["ToUserName"] == sender
        assert set(reply) == set(xmltodict.parse(FORMATS["passive_reply"]["text"])["xml"])
    if name.startswith("event_subscribe"):
        assert "绑定" in reply["Content"] and follower["following"] is True
    if name.startswith("event_subscribe_via_param_qr"):
        expected = FORMATS["inbound"]["event_subscribe_via_param_qr_expected"]
        assert follower["scene"] == expected["scene_value"]
    if name == "event_unsubscribe":
        assert follower["following"] is False
