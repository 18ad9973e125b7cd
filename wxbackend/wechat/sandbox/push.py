"""How WeChat pushes a user's message to our callback, and reads the reply.

The sandbox builds the inbound XML as WeChat does (ToUserName = the account's
original id ``gh_...``, FromUserName = the openid, CreateTime, MsgType ...),
signs the URL (``signature``, ``timestamp``, ``nonce``, ``openid``) and, in
safe mode, encrypts the body (``<xml><ToUserName/><Encrypt/></xml>``, plus
``encrypt_type=aes`` and ``msg_signature``) with wechatpy, the library the
server uses too::

    pusher = Pusher(config)
    result = await pusher.push("oUser1", {"MsgType": "text", "Content": "你好", "MsgId": 1})
    result.reply   # {"MsgType": "text", "Content": "...", ...} or None ("success"/empty)

A callback that does not answer within ``callback_timeout_seconds`` is tried
again, ``callback_retries`` times, with the same message, as WeChat does.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

import httpx
import xmltodict
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException, InvalidSignatureException
from wechatpy.utils import WeChatSigner

from wxbackend.wechat.sandbox.config import SandboxConfig

REPLY_TYPES = ("text", "image", "voice", "video", "music", "news", "transfer_customer_service")
UNAVAILABLE = "WeChat would show the user 该公众号暂时无法提供服务"


@dataclass
class PushResult:
    status: int | None  # our server's HTTP status; None when it never answered
    body: str
    reply: dict[str, Any] | None
    error: str | None  # why WeChat would reject the answer
    attempts: int
    message: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def cdata(text: str) -> str:
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def inbound_xml(fields: dict[str, Any]) -> str:
    """WeChat's XML: numbers bare, text in CDATA."""
    parts = [f"<{name}>{value}</{name}>" if isinstance(value, int) else
             f"<{name}>{cdata(str(value))}</{name}>" for name, value in fields.items()]
    return "<xml>" + "".join(parts) + "</xml>"


def parse_xml(text: str) -> dict[str, Any] | None:
    """The fields under <xml>, or None for anything else (expat refuses entities)."""
    try:
        doc = xmltodict.parse(text)
    except Exception:  # expat errors of every kind
        return None
    root = doc.get("xml") if isinstance(doc, dict) else None
    return root if isinstance(root, dict) else None


def sign(*parts: str) -> str:
    signer = WeChatSigner()
    signer.add_data(*parts)
    return signer.signature


class Pusher:
    def __init__(self, config: SandboxConfig) -> None:
        self.config = config

    @property
    def crypto(self) -> WeChatCrypto | None:
        """wechatpy's crypto in safe mode (read per push: tests switch modes)."""
        config = self.config
        if config.mode != "safe":
            return None
        return WeChatCrypto(config.oa_token, config.oa_aes_key, config.oa_appid)

    def envelope(self, openid: str, xml: str) -> tuple[dict[str, str], str]:
        """The signed query and the body (encrypted in safe mode) of one push."""
        timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**10))
        query = {"signature": sign(self.config.oa_token, timestamp, nonce),
                 "timestamp": timestamp, "nonce": nonce, "openid": openid}
        crypto = self.crypto
        if crypto is None:
            return query, xml
        # wechatpy's encrypt_message yields Encrypt and its msg_signature
        # (sha1 of sorted token, timestamp, nonce, Encrypt), as WeChat computes them.
        sealed = xmltodict.parse(crypto.encrypt_message(xml, nonce, timestamp))["xml"]
        query.update(encrypt_type="aes", msg_signature=sealed["MsgSignature"])
        body = inbound_xml({"ToUserName": self.config.oa_original_id,
                            "Encrypt": sealed["Encrypt"]})
        return query, body

    async def push(self, openid: str, fields: dict[str, Any]) -> PushResult:
        message = {"ToUserName": self.config.oa_original_id, "FromUserName": openid,
                   "CreateTime": int(time.time()), **fields}
        xml = inbound_xml(message)
        attempts, status, text = 0, None, ""
        async with httpx.AsyncClient(timeout=self.config.callback_timeout_seconds) as http:
            while attempts <= self.config.callback_retries:
                attempts += 1
                query, body = self.envelope(openid, xml)
                try:
                    response = await http.post(self.config.callback_url, params=query,
                                               content=body.encode(),
                                               headers={"Content-Type": "text/xml"})
                except httpx.HTTPError as exc:
                    text = f"{type(exc).__name__}: no answer"
                    continue
                status, text = response.status_code, response.text
                break
        if status is None:
            return PushResult(None, text, None, f"no answer after {attempts} tries; {UNAVAILABLE}",
                              attempts, message)
        reply, error = self.read_reply(openid, status, text)
        return PushResult(status, text, reply, error, attempts, message)

    def read_reply(self, openid: str, status: int, text: str) -> tuple[dict | None, str | None]:
        """The decrypted reply and, if WeChat would refuse it, why."""
        if status != 200:
            return None, f"HTTP {status}; {UNAVAILABLE}"
        if text.strip() in ("", "success"):
            return None, None
        doc = parse_xml(text)
        if doc is None:
            return None, f"reply is not WeChat XML; {UNAVAILABLE}"
        crypto = self.crypto
        if crypto is not None:
            if "Encrypt" not in doc:
                return doc, f"safe mode needs an encrypted reply; {UNAVAILABLE}"
            try:
                plain = crypto.decrypt_message(text, doc.get("MsgSignature"),
                                                    doc.get("TimeStamp"), doc.get("Nonce"))
            except (InvalidSignatureException, InvalidAppIdException, ValueError, TypeError,
                    KeyError) as exc:
                return None, f"encrypted reply rejected ({type(exc).__name__}); {UNAVAILABLE}"
            doc = parse_xml(plain)
            if doc is None:
                return None, f"decrypted reply is not WeChat XML; {UNAVAILABLE}"
        return doc, self.reply_problem(openid, doc)

    def reply_problem(self, openid: str, doc: dict[str, Any]) -> str | None:
        if doc.get("ToUserName") != openid:
            return f"reply ToUserName must be the user's openid; {UNAVAILABLE}"
        if doc.get("FromUserName") != self.config.oa_original_id:
            return f"reply FromUserName must be {self.config.oa_original_id}; {UNAVAILABLE}"
        if doc.get("MsgType") not in REPLY_TYPES:
            return f"reply MsgType must be one of {', '.join(REPLY_TYPES)}; {UNAVAILABLE}"
        if not str(doc.get("CreateTime", "")).isdigit():
            return f"reply CreateTime must be an integer; {UNAVAILABLE}"
        if doc["MsgType"] == "text" and not doc.get("Content"):
            return f"text reply without Content; {UNAVAILABLE}"
        return None

    async def verify_url(self) -> dict[str, Any]:
        """WeChat's URL check when the server address is saved: GET with echostr."""
        timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**10))
        echostr = str(secrets.randbelow(10**19))
        query = {"signature": sign(self.config.oa_token, timestamp, nonce),
                 "timestamp": timestamp, "nonce": nonce, "echostr": echostr}
        async with httpx.AsyncClient(timeout=self.config.callback_timeout_seconds) as http:
            try:
                response = await http.get(self.config.callback_url, params=query)
            except httpx.HTTPError as exc:
                return {"status": None, "body": type(exc).__name__, "ok": False}
        return {"status": response.status_code, "body": response.text,
                "ok": response.status_code == 200 and response.text == echostr}
