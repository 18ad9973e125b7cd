"""Speak to ``/wechat/oa`` as WeChat's servers do: sign, encrypt, build message XML.

The requests are made with wechatpy (the same library the server uses, but
its encrypting half), and checked against WeChat's official vectors in
``tests/wechat/test_vectors.py``, so a bug shared by both sides would show
there. The fixtures (``oa_url``: our server with the test account :data:`OA`)
are in ``tests/wechat/conftest.py``::

    async def test_x(ctx, oa_url):
        reply = await say(oa_url, text_xml("o1", "帮助"))   # decrypted reply fields
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import time
from dataclasses import dataclass

import httpx
import xmltodict
from wechatpy.crypto import WeChatCrypto


@dataclass(frozen=True)
class Account:
    appid: str
    token: str
    aes_key: str
    secret: str = "0123456789abcdef0123456789abcdef"
    original_id: str = "gh_test0000001"

    @property
    def crypto(self) -> WeChatCrypto:
        return WeChatCrypto(self.token, self.aes_key, self.appid)


OA = Account(appid="wxtest1234567890", token="tokentest42",
             aes_key="kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aQ")
_msg_ids = itertools.count(int(time.time()) * 1000)


def next_msg_id() -> int:
    return next(_msg_ids)


def sha1_sorted(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()  # noqa: S324 - WeChat's scheme


def account_env(account: Account, **extra: str) -> dict[str, str]:
    return {"WXB_WECHAT_OA_APPID": account.appid, "WXB_WECHAT_OA_TOKEN": account.token,
            "WXB_WECHAT_OA_AES_KEY": account.aes_key, "WXB_WECHAT_OA_SECRET": account.secret,
            **extra}


# -- message XML --------------------------------------------------------------

def text_xml(openid: str, content: str, msg_id: int | None = None, *,
             to: str = OA.original_id, create_time: int | None = None) -> str:
    msg_id = next_msg_id() if msg_id is None else msg_id
    return (f"<xml><ToUserName><![CDATA[{to}]]></ToUserName>"
            f"<FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{create_time or int(time.time())}</CreateTime>"
            f"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content>"
            f"<MsgId>{msg_id}</MsgId></xml>")


def event_xml(openid: str, event: str, key: str | None = None, *, create_time: int | None = None,
              to: str = OA.original_id, extra: str = "") -> str:
    key_xml = f"<EventKey><![CDATA[{key}]]></EventKey>" if key is not None else ""
    return (f"<xml><ToUserName><![CDATA[{to}]]></ToUserName>"
            f"<FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{create_time or int(time.time())}</CreateTime>"
            f"<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[{event}]]></Event>"
            f"{key_xml}{extra}</xml>")


# -- signing and encrypting ----------------------------------------------------

def plain_request(account: Account, xml: str) -> tuple[dict[str, str], bytes]:
    timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**9))
    query = {"signature": sha1_sorted(account.token, timestamp, nonce),
             "timestamp": timestamp, "nonce": nonce, "openid": "x"}
    return query, xml.encode()


def safe_request(account: Account, xml: str, *, appid: str | None = None) -> tuple[dict[str, str], bytes]:
    """A safe-mode delivery: Encrypt in the body, msg_signature in the query."""
    timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**9))
    crypto = WeChatCrypto(account.token, account.aes_key, appid or account.appid)
    envelope = xmltodict.parse(crypto.encrypt_message(xml, nonce, timestamp))["xml"]
    encrypt = envelope["Encrypt"]
    body = f"<xml><ToUserName><![CDATA[{account.original_id}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    query = {"signature": sha1_sorted(account.token, timestamp, nonce), "timestamp": timestamp,
             "nonce": nonce, "openid": "x", "encrypt_type": "aes",
             "msg_signature": envelope["MsgSignature"]}
    return query, body.encode()


def resign(account: Account, query: dict[str, str], body: bytes, encrypt: str) -> tuple[dict[str, str], bytes]:
    """Replace the Encrypt field (e.g. by garbage) and sign it properly."""
    query = dict(query)
    query["msg_signature"] = sha1_sorted(account.token, query["timestamp"], query["nonce"], encrypt)
    body = (f"<xml><ToUserName><![CDATA[{account.original_id}]]></ToUserName>"
            f"<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>").encode()
    return query, body


def decrypt_reply(account: Account, body: str) -> dict[str, str]:
    """Check the encrypted answer as WeChat would and return the reply's fields."""
    envelope = xmltodict.parse(body)["xml"]
    assert set(envelope) == {"Encrypt", "MsgSignature", "TimeStamp", "Nonce"}, envelope
    assert envelope["MsgSignature"] == sha1_sorted(account.token, envelope["TimeStamp"],
                                                   envelope["Nonce"], envelope["Encrypt"])
    plain = account.crypto.decrypt_message(body, envelope["MsgSignature"], envelope["TimeStamp"],
                                           envelope["Nonce"])
    return xmltodict.parse(plain)["xml"]


async def post(url: str, query: dict[str, str], body: bytes, **kwargs) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(url + "/wechat/oa", params=query, content=body, **kwargs)


async def say(url: str, xml: str, account: Account = OA) -> dict[str, str] | None:
    """Deliver in safe mode; the decrypted reply's fields, or None for "success"."""
    response = await post(url, *safe_request(account, xml))
    assert response.status_code == 200, response.text
    if response.text == "success":
        return None
    return decrypt_reply(account, response.text)
