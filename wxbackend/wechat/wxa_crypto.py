"""Mini-program open data: ``encryptedData`` decryption and rawData signatures.

WeChat encrypts open data (legacy phone numbers, run steps, share info) with
AES-128-CBC under the user's ``session_key``; the plaintext carries a
watermark naming the appid it was made for, which must be ours::

    data = decrypt_open_data(session_key, encrypted_data, iv, appid="wx...")
    data["phoneNumber"]
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


class OpenDataError(ValueError):
    """The data cannot be trusted: bad encoding, key, padding, JSON or watermark."""


def _b64(value: str, name: str, size: int | None = None) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise OpenDataError(f"{name} is not base64") from None
    if size is not None and len(raw) != size:
        raise OpenDataError(f"{name} must be {size} bytes")
    return raw


def decrypt_open_data(session_key: str, encrypted_data: str, iv: str, *, appid: str) -> dict[str, Any]:
    key = _b64(session_key, "session_key", 16)
    vector = _b64(iv, "iv", 16)
    data = _b64(encrypted_data, "encryptedData")
    if not data or len(data) % 16:
        raise OpenDataError("encryptedData length is not a multiple of the block size")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(vector)).decryptor()
    padded = decryptor.update(data) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        plain = unpadder.update(padded) + unpadder.finalize()
        payload = json.loads(plain)
    except (ValueError, UnicodeDecodeError):
        raise OpenDataError("wrong key or corrupted data") from None
    if not isinstance(payload, dict) or payload.get("watermark", {}).get("appid") != appid:
        raise OpenDataError("watermark appid is not ours")
    return payload


def raw_data_signature(raw_data: str, session_key: str) -> str:
    """``sha1(rawData + session_key)``, as wx.getUserInfo signs its rawData."""
    return hashlib.sha1((raw_data + session_key).encode(), usedforsecurity=False).hexdigest()


def check_raw_data(raw_data: str, signature: str, session_key: str) -> bool:
    return hmac.compare_digest(raw_data_signature(raw_data, session_key), signature)
