"""Personal data at rest: AES-256-GCM encryption plus an HMAC blind index.

An ID-card number or phone is stored as ciphertext (``Binary``) and, for exact
lookup, as a keyed HMAC of its normalised form (the blind index). The blind
index key is derived from the field key with HKDF so that one setting
(``WXB_SECURITY_FIELD_KEY``) carries both::

    cipher = FieldCipher(key)
    token = cipher.encrypt("350203199001011234", purpose="id_card")
    cipher.decrypt(token, purpose="id_card")        # the number again
    cipher.blind_index("350203199001011234", "id_card")  # stable hex
"""

from __future__ import annotations

import hashlib
import hmac
import os

from bson.binary import Binary
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = b"\x01"


class FieldCipher:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("field key must be 32 bytes")
        self._aead = AESGCM(key)
        self._index_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                               info=b"wxbackend blind index v1").derive(key)

    def encrypt(self, value: str, *, purpose: str) -> Binary:
        # The purpose is authenticated data: a phone ciphertext pasted into the
        # ID-card field fails to decrypt instead of showing the wrong thing.
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, value.encode(), purpose.encode())
        return Binary(_VERSION + nonce + sealed)

    def decrypt(self, token: bytes, *, purpose: str) -> str:
        data = bytes(token)
        if data[:1] != _VERSION:
            raise ValueError("unknown ciphertext version")
        return self._aead.decrypt(data[1:13], data[13:], purpose.encode()).decode()

    def blind_index(self, value: str, purpose: str) -> str:
        mac = hmac.new(self._index_key, f"{purpose}:{value}".encode(), hashlib.sha256)
        return mac.hexdigest()[:32]


def mask_id_card(value: str) -> str:
    """``350203198503140011`` -> ``3502**********0011``.

    The hidden digits are the district (2) and the birth date (8). A page that
    shows this must not show the full birth date beside it (member pages show
    the birth year only): that left two digits, nine candidates, to guess.
    """
    if len(value) < 8:
        return "*" * len(value)
    return value[:4] + "*" * (len(value) - 8) + value[-4:]


def mask_phone(value: str) -> str:
    """``13812345678`` -> ``*******5678``: the last four, as "尾号5678" is read out.

    Showing the carrier prefix too (``138****5678``) would leave four digits,
    10,000 candidates, to try against anything that answers a full number.
    """
    if len(value) < 8:
        return "*" * len(value)
    return "*" * (len(value) - 4) + value[-4:]


def mask_name(value: str) -> str:
    """``张小明`` -> ``张**``: for lists shown to people outside the branch."""
    return value[:1] + "*" * (len(value) - 1) if value else value
