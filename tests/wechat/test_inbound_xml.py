"""The callback's XML reader: the regex shortcut must agree with expat on every document it takes."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from wxbackend.wechat import inbound
from wxbackend.wechat.inbound import CallbackError, _parse_expat, _parse_flat, parse_xml

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "wechat-vectors"


def read(parse, text: str) -> dict[str, str] | str:
    """The fields, or the error code."""
    try:
        return parse(text)
    except CallbackError as exc:
        return exc.code


def expat_or_error(text: str) -> dict[str, str] | str:
    return read(_parse_expat, text)


def test_wechat_messages_take_the_shortcut_and_read_as_expat_reads_them():
    message = ("<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oX]]>"
               "</FromUserName><CreateTime>1348831860</CreateTime><MsgType><![CDATA[text]]></MsgType>"
               "<Content><![CDATA[我的支部 <b>&amp; ]] > ]]></Content><MsgId>1234567890123456</MsgId></xml>")
    pretty = re.sub(r"(<xml>|</\w+>)", "\\1\n  ", message).replace("  </xml>", "</xml>") + "\n"
    for text in (message, pretty):
        fields = _parse_flat(text)
        assert fields is not None
        assert fields == _parse_expat(text)
        assert fields["Content"] == "我的支部 <b>&amp; ]] > "


def test_the_official_vectors_take_the_shortcut():
    texts = []
    for path in sorted(VECTORS.rglob("*")):
        if path.suffix == ".xml":
            texts.append(path.read_text("utf-8"))
        elif path.suffix == ".json":
            texts += [v for v in _strings(json.loads(path.read_text("utf-8"))) if v.lstrip().startswith("<xml>")]
    assert texts, f"no XML vectors under {VECTORS}"
    flat = [t for t in texts if _parse_flat(t) is not None]
    assert flat, "no official vector is read by the shortcut"
    for text in flat:
        assert _parse_flat(text) == _parse_expat(text)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


@pytest.mark.parametrize("text", [
    "<xml><ScanCodeInfo><ScanType><![CDATA[qrcode]]></ScanType></ScanCodeInfo></xml>",  # nested
    "<xml><Content>a &amp; b</Content></xml>",  # an entity: expat resolves it
    "<xml><Content>line\r\nbreak</Content></xml>",  # expat normalises CR LF
    "<xml><Content>bell\x07</Content></xml>",  # not an XML character
    "<xml><Content>a]]>b</Content></xml>",  # not allowed in text
    "<xml><Content><![CDATA[a]]>b]]></Content></xml>",
    "<xml><Content>x<![CDATA[y]]></Content></xml>",  # mixed content
    '<?xml version="1.0"?><xml><A>1</A></xml>',
    '<xml><A b="1">1</A></xml>',
    "<xml><A>1</B></xml>",
    "<xml><A>1</A>",
    "<xml><A>1</A></xml><xml/>",
    "<root><A>1</A></root>",
])
def test_anything_else_goes_to_expat(text):
    assert _parse_flat(text) is None
    assert read(parse_xml, text) == expat_or_error(text)


def test_random_documents_the_shortcut_takes_read_exactly_as_expat_reads_them():
    rng = random.Random(20261128)
    pieces = ["a", "中", " ", "\n", "\t", "\r", "]", "]]", ">", "<", "&", "&amp;", "\x01", "<![CDATA[",
              "]]>", "<B>", "</B>", "<A>", "</A>", "\ufffe"]
    taken = 0
    for _ in range(20_000):
        children = []
        for _ in range(rng.randint(0, 4)):
            tag = rng.choice(["A", "B", "Content"])
            body = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
            if rng.random() < 0.5:
                body = f"<![CDATA[{body}]]>"
            close = tag if rng.random() < 0.95 else "A"
            children.append(f"{rng.choice(['', ' ', chr(10)])}<{tag}>{body}</{close}>")
        text = "<xml>" + "".join(children) + rng.choice(["", "\n"]) + "</xml>"
        fields = _parse_flat(text)
        if fields is not None:
            taken += 1
            assert fields == expat_or_error(text), text
    assert taken > 2_000  # the generator does exercise the shortcut


def test_doctype_is_refused_before_either_reader(monkeypatch):
    calls = []
    monkeypatch.setattr(inbound, "_parse_flat", lambda text: calls.append(text))
    with pytest.raises(CallbackError) as caught:
        parse_xml('<!DOCTYPE xml [<!ENTITY a "b">]><xml><A>&a;</A></xml>')
    assert caught.value.code == "xml_doctype_or_entity" and calls == []
