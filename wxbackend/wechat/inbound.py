"""The official-account callback's wire format: signatures, safe-mode crypto, safe XML.

WeChat calls ``/wechat/oa`` with ``signature``, ``timestamp`` and ``nonce`` in
the query; in safe mode (``encrypt_type=aes``) the body carries ``Encrypt``
(AES-256-CBC, key = b64decode(EncodingAESKey + "="), IV = key[:16], PKCS#7 to
32-byte blocks, plaintext = 16 random bytes + 4-byte length + XML + appid)
and is checked by ``msg_signature``. This is wechatpy's scheme written out
(it runs on every message, and wechatpy's layers cost as much as the AES),
with what wechatpy leaves out: strict base64/padding/length checks, and one
error type whose ``status`` the handler answers with. The official vectors
test it both ways. The XML is read by a regex for plainly flat documents and
by expat for the rest, DOCTYPE and entity declarations refused: wechatpy's
``parse_message`` (xmltodict) disables entities too, but costs three times as
much on every message for a flat document of six fields::

    crypto = CallbackCrypto(token="spamtest", aes_key="abc...FG", appid="wx2c2769f8efd9abc2")
    crypto.check_msg_signature(msg_signature, timestamp, nonce, encrypt)  # or CallbackError 403
    xml = crypto.decrypt(encrypt)                                         # or CallbackError 400/403
    inbound = parse_inbound(xml)                                          # router.Inbound
    body = crypto.encrypt_reply(reply_xml)                                # safe-mode answer
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct
import time
from typing import Any
from xml.parsers import expat
from xml.parsers.expat import ExpatError

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from wechatpy.crypto import WeChatCrypto

from wxbackend.wechat.router import Inbound

# A DOCTYPE is the door to entity expansion (billion laughs) and external
# entities (XXE); WeChat never sends one, so any is refused before parsing.
UNSAFE_XML = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
# Field lengths far beyond anything WeChat sends (openids are 28 characters).
MAX_ID_LENGTH = 128


class CallbackError(Exception):
    """A request we refuse; ``status`` is the HTTP answer, ``code`` goes to the log."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(code)
        self.status = status
        self.code = code


def bad_request(code: str) -> CallbackError:
    return CallbackError(400, code)


def sign(*parts: str) -> str:
    """sha1 of the sorted parts, as WeChat signs (wechatpy's WeChatSigner, without its layers)."""
    # Sorting the strings is sorting their UTF-8 bytes: the encoding keeps code-point order.
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()  # noqa: S324 - WeChat's scheme


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


class _SafeModeCipher:
    """WeChat's message AES with the checks wechatpy's ``_decrypt`` skips.

    AES-256-CBC, IV = key[:16], PKCS#7 to 32-byte blocks, plaintext =
    16 random characters + 4-byte big-endian length + XML + appid. Written out
    rather than through wechatpy's PrpCrypto, whose layers cost as much as the
    AES itself on every message; the official vectors test both directions.
    """

    def __init__(self, key: bytes) -> None:
        self._cipher = Cipher(algorithms.AES(key), modes.CBC(key[:16]))

    def encrypt(self, text: str, appid: str) -> str:
        data = text.encode()
        # 16 characters, as wechatpy's random prefix, but from the OS CSPRNG.
        plain = os.urandom(8).hex().encode() + struct.pack(">I", len(data)) + data + appid.encode()
        pad = 32 - len(plain) % 32
        encryptor = self._cipher.encryptor()
        sealed = encryptor.update(plain + bytes((pad,)) * pad) + encryptor.finalize()
        return base64.b64encode(sealed).decode()

    def decrypt(self, text: str, appid: str) -> str:
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request("encrypt_not_base64") from None
        if not raw or len(raw) % 16:
            raise bad_request("encrypt_bad_length")
        decryptor = self._cipher.decryptor()
        plain = decryptor.update(raw) + decryptor.finalize()
        pad = plain[-1]
        if not 1 <= pad <= 32 or plain[-pad:] != bytes((pad,)) * pad:
            raise bad_request("encrypt_bad_padding")
        content = plain[16:-pad]
        if len(content) < 4:
            raise bad_request("encrypt_too_short")
        (length,) = struct.unpack(">I", content[:4])
        if length > len(content) - 4:
            raise bad_request("encrypt_bad_length_field")
        if not hmac.compare_digest(content[4 + length:], appid.encode()):
            # Decrypted with our key but made for another account: not for us.
            raise CallbackError(403, "encrypt_wrong_appid")
        try:
            return content[4:4 + length].decode("utf-8")
        except UnicodeDecodeError:
            raise bad_request("encrypt_not_utf8") from None


class CallbackCrypto:
    """Signature checks and safe-mode crypto for one official account."""

    def __init__(self, token: str, aes_key: str, appid: str) -> None:
        self.token = token
        self.appid = appid
        self.config = (token, aes_key, appid)
        # wechatpy derives (and checks) the key: b64decode(EncodingAESKey + "=").
        self._aes = _SafeModeCipher(WeChatCrypto(token, aes_key, appid).key) if aes_key else None

    @property
    def safe_mode(self) -> bool:
        """An EncodingAESKey is configured: deliveries must be encrypted (``msg_signature``)."""
        return self._aes is not None

    def check_signature(self, signature: str, timestamp: str, nonce: str) -> None:
        """Plain mode: sha1(sorted(token, timestamp, nonce))."""
        if not _same(sign(self.token, timestamp, nonce), signature):
            raise CallbackError(403, "bad_signature")

    def check_msg_signature(self, msg_signature: str, timestamp: str, nonce: str,
                            encrypt: str) -> None:
        """Safe mode: sha1(sorted(token, timestamp, nonce, Encrypt))."""
        if not _same(sign(self.token, timestamp, nonce, encrypt), msg_signature):
            raise CallbackError(403, "bad_msg_signature")

    def decrypt(self, encrypt: str) -> str:
        if self._aes is None:
            raise bad_request("safe_mode_not_configured")
        return self._aes.decrypt(encrypt, self.appid)

    def encrypt_reply(self, xml: str, timestamp: str | None = None) -> str:
        """The safe-mode answer: Encrypt, MsgSignature, TimeStamp, Nonce."""
        assert self._aes is not None
        nonce = str(int.from_bytes(os.urandom(4), "big"))  # secrets.randbelow costs 3x more
        timestamp = timestamp or str(int(time.time()))
        encrypt = self._aes.encrypt(xml, self.appid)
        signature = sign(self.token, timestamp, nonce, encrypt)
        return ("<xml><Encrypt><![CDATA[" + encrypt + "]]></Encrypt><MsgSignature><![CDATA["
                + signature + "]]></MsgSignature><TimeStamp>" + timestamp
                + "</TimeStamp><Nonce><![CDATA[" + nonce + "]]></Nonce></xml>")


def decode_body(body: bytes) -> str:
    """The body as text, refused if not UTF-8 or if it declares a DOCTYPE/ENTITY."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        # Decoding first also stops UTF-16 tricks that hide "<!DOCTYPE" from a byte scan.
        raise bad_request("body_not_utf8") from None
    check_safe_xml(text)
    return text


def check_safe_xml(text: str) -> None:
    if UNSAFE_XML.search(text):
        raise bad_request("xml_doctype_or_entity")


# WeChat's documents are flat: <xml> holding <Name>text</Name> or
# <Name><![CDATA[text]]></Name> children. A document of exactly that shape,
# with no entity, markup, "]]>", carriage return or control character
# anywhere, means the same to every XML parser, so a regex reads it at a
# quarter of expat's cost; anything else (nested event fields, entities, a
# declaration, odd characters) goes to expat, which decides.
_FLAT_OPEN = re.compile(r"[ \t\n]*<xml>")
_FLAT_FIELD = re.compile(
    r"[ \t\n]*<([A-Za-z][A-Za-z0-9_]{0,63})>"
    r"(?:<!\[CDATA\[((?:[^\]]++|\](?!\]>))*+)\]\]>|((?:[^<&\]]++|\](?!\]>))*+))</\1>")
_FLAT_CLOSE = re.compile(r"[ \t\n]*</xml>[ \t\n]*\Z")
_NOT_PLAIN = re.compile("[\x00-\x08\x0b-\x1f\ud800-\udfff\ufffe\uffff]")


def _parse_flat(text: str) -> dict[str, str] | None:
    """:func:`parse_xml`'s answer for a plainly flat document, else None."""
    opened = _FLAT_OPEN.match(text)
    if opened is None or _NOT_PLAIN.search(text):
        return None
    fields: dict[str, str] = {}
    pos = opened.end()
    while (child := _FLAT_FIELD.match(text, pos)) is not None:
        cdata = child.group(2)
        fields[child.group(1)] = cdata if cdata is not None else child.group(3)
        pos = child.end()
    return fields if _FLAT_CLOSE.match(text, pos) else None


def parse_xml(text: str) -> dict[str, str]:
    """The text of each child of a flat ``<xml>`` document (the safe-mode envelope).

    expat with DOCTYPE and entity declarations refused by the parser itself (on
    top of :func:`check_safe_xml`); nested elements are skipped. Plainly flat
    documents, which is what WeChat sends, take :func:`_parse_flat`'s shortcut
    to the same answer.
    """
    check_safe_xml(text)
    flat = _parse_flat(text)
    return flat if flat is not None else _parse_expat(text)


def _parse_expat(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    depth = [0]
    chunks: list[str] = []

    def start(name: str, attrs: Any) -> None:
        depth[0] += 1
        if depth[0] == 1 and name != "xml":
            raise ValueError("root is not <xml>")
        chunks.clear()

    def end(name: str) -> None:
        if depth[0] == 2:
            fields[name] = "".join(chunks)
        depth[0] -= 1

    def refuse(*_: Any) -> None:
        raise ValueError("DOCTYPE and entities are refused")

    parser = expat.ParserCreate("utf-8")
    parser.buffer_text = True
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chunks.append
    parser.StartDoctypeDeclHandler = parser.EntityDeclHandler = refuse
    try:
        parser.Parse(text.encode("utf-8"), True)
    except (ExpatError, ValueError):
        raise bad_request("xml_malformed") from None
    return fields


def envelope_encrypt(text: str) -> str:
    """The ``Encrypt`` field of a safe-mode body."""
    encrypt = parse_xml(text).get("Encrypt")
    if not encrypt:
        raise bad_request("encrypt_missing")
    return encrypt


def _text_field(raw: dict[str, str], name: str) -> str:
    value = raw.get(name, "")
    if not value or len(value) > MAX_ID_LENGTH:
        raise bad_request(f"field_{name}")
    return value


def parse_inbound(xml: str) -> Inbound:
    """Parse a decrypted (or plain-mode) message and flatten it for the router.

    The same field model as wechatpy's ``parse_message`` (WeChat's flat
    ``<xml>``, QR scenes from ``qrscene_`` keys), read by :func:`parse_xml`:
    a third of the cost of xmltodict on every message, entities refused by
    the parser itself.
    """
    raw = parse_xml(xml)
    openid = _text_field(raw, "FromUserName")
    account = _text_field(raw, "ToUserName")
    msg_type = _text_field(raw, "MsgType").lower()
    created = raw.get("CreateTime", "")
    if not created.isdigit():
        raise bad_request("field_CreateTime")
    fields: dict[str, Any] = {}
    if msg_type == "text":
        fields["content"] = raw.get("Content", "")
    elif msg_type == "event":
        fields.update(_event_fields(raw))
    msg_id = raw.get("MsgId", "")
    return Inbound(openid=openid, account=account, msg_type=msg_type, create_time=int(created),
                   msg_id=int(msg_id) if msg_id.isdigit() else None, raw=raw, **fields)


def _event_fields(raw: dict[str, str]) -> dict[str, Any]:
    key = raw.get("EventKey", "")
    event = _text_field(raw, "Event").lower()
    if event == "subscribe" and key.startswith("qrscene_"):
        # A new follower who scanned a parametric QR code (WeChat's doc: qrscene_ + scene).
        return {"event": "subscribe", "key": key, "scene": key[len("qrscene_"):]}
    if event == "scan":
        return {"event": "scan", "key": key, "scene": key}
    return {"event": event, "key": key}
