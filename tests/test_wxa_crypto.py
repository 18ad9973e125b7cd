"""Mini-program open data against WeChat's official sample."""

import base64
import json
from pathlib import Path

import pytest

from wxbackend.wechat.wxa_crypto import OpenDataError, check_raw_data, decrypt_open_data

VECTORS = json.loads((Path(__file__).resolve().parents[2] / "shared" / "wechat-vectors"
                      / "wxa_encrypted_data_official.json").read_text())


def test_official_sample_decrypts():
    data = decrypt_open_data(VECTORS["session_key"], VECTORS["encrypted_data"], VECTORS["iv"],
                             appid=VECTORS["appid"])
    assert data == json.loads(VECTORS["expected_plaintext_json"])


def test_watermark_of_another_app_is_refused():
    with pytest.raises(OpenDataError, match="watermark"):
        decrypt_open_data(VECTORS["session_key"], VECTORS["encrypted_data"], VECTORS["iv"],
                          appid="wx0000000000000000")


@pytest.mark.parametrize("field, value", [
    ("session_key", "not base64!"),
    ("session_key", base64.b64encode(b"x" * 16).decode()),   # wrong key
    ("iv", base64.b64encode(b"short").decode()),
    ("encrypted_data", VECTORS["encrypted_data"][:-8] + "AAAAAAA="),
    ("encrypted_data", base64.b64encode(b"x" * 15).decode()),
])
def test_tampered_input_is_refused(field, value):
    args = {k: VECTORS[k] for k in ("session_key", "encrypted_data", "iv")}
    args[field] = value
    with pytest.raises(OpenDataError):
        decrypt_open_data(args["session_key"], args["encrypted_data"], args["iv"], appid=VECTORS["appid"])


@pytest.mark.parametrize("case", VECTORS["raw_data_signature"])
def test_raw_data_signatures(case):
    assert check_raw_data(case["raw_data"], case["signature"], case["session_key"])
    assert not check_raw_data(case["raw_data"] + " ", case["signature"], case["session_key"])
