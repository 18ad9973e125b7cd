"""The codes members check in with: the rotating on-screen code, and the printed codes.

- The rotating code on the secretary's screen is ``<meeting>.<step>.<mac>``: an
  HMAC-SHA256 over meeting id and time step (``rotating_step_seconds``), keyed by
  HKDF from ``security.secret_key``; the current and the previous step are
  accepted, so a photo sent home stops working within a step.
- The printed codes carry the meeting's ``checkin_secret`` (random, stored on the
  meeting, in no API response and on no page but the secretary's printable
  images), so the meeting id, which every invited member's list shows, is not
  enough to check in:

  - the official account's temporary QR code, scene ``checkin:<meeting>.<secret>``
    (49 of QR_STR_SCENE's 64 characters), answered in chat;
  - the mini-program code (getwxacodeunlimit), scene ``<id><secret>``: the id's 12
    bytes in URL-safe base64 (16 characters) then the 16-character secret, exactly
    WeChat's 32. The page it opens posts the scene as it is.

- Both are made through WeChat once, when the meeting is published (a job) or by
  the secretary's POST, and kept on the meeting (GridFS for the image), so every
  printout is the same and a GET spends no quota (:mod:`.printed_codes`).

::

    scene = mp_scene(meeting)                # 32 characters, printed in the code
    meeting_id, secret = parse_scene(scene)  # what the check-in compares
    await ensure_codes(ctx, meeting)         # WeChat calls for whatever is missing

Refusals: ``checkin_token_invalid``, ``checkin_token_expired``,
``checkin_code_invalid``, ``wechat_unavailable``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import qrcode
import qrcode.image.pure
from bson import ObjectId
from bson.errors import InvalidId
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from models import meetings as meetings_model
from wxbackend.context import AppContext
from wxbackend.errors import DomainError, Unavailable
from wxbackend.wechat.client import mp_client, oa_client
from wxbackend.wechat.client.qrcode import MAX_QR_EXPIRE_SECONDS
from wxbackend.wechat.errors import WeChatError

SCENE_PREFIX = "checkin:"
# The meeting id in a mini-program scene: 12 bytes, URL-safe base64, no padding.
COMPACT_ID_CHARS = 16
# HKDF "info": a key for this purpose only, never the cookie-signing key itself.
TOKEN_KEY_INFO = b"wxbackend/meeting-checkin/rotating-code/v1"
TOKEN_MAC_BYTES = 16
T = TypeVar("T")


def token_invalid() -> DomainError:
    return DomainError("checkin_token_invalid", "签到码无效，请扫描会场屏幕上的二维码")


def code_invalid() -> DomainError:
    return DomainError("checkin_code_invalid", "签到码无效或已更换，请扫描会场张贴的最新签到码")


class TokenKey:
    """The rotating code's key: derived once per process, never the cookie-signing key itself."""

    def __init__(self, secret_key: str) -> None:
        self.key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                        info=TOKEN_KEY_INFO).derive(secret_key.encode())


# -- the rotating on-screen code ----------------------------------------------------

def _mac(ctx: AppContext, meeting_id: ObjectId, step: int) -> str:
    key = ctx.state(TokenKey, lambda: TokenKey(ctx.settings.security.secret_key)).key
    digest = hmac.new(key, f"{meeting_id}.{step}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:TOKEN_MAC_BYTES]).rstrip(b"=").decode()


def current_step(ctx: AppContext, now: datetime) -> int:
    return int(now.timestamp()) // ctx.settings.meetings.rotating_step_seconds


def rotating_token(ctx: AppContext, meeting_id: ObjectId, now: datetime | None = None) -> str:
    """``<meeting>.<step>.<mac>``: what the screen's QR code carries for this time step."""
    step = current_step(ctx, now or ctx.clock.now())
    return f"{meeting_id}.{step}.{_mac(ctx, meeting_id, step)}"


def seconds_left(ctx: AppContext, now: datetime | None = None) -> int:
    """Until the screen should show the next code."""
    step = ctx.settings.meetings.rotating_step_seconds
    return step - int((now or ctx.clock.now()).timestamp()) % step


def verify_token(ctx: AppContext, token: str, now: datetime) -> ObjectId:
    """The meeting of a genuine token of the current or previous step, else a coded refusal."""
    parts = token.split(".") if isinstance(token, str) and len(token) <= 80 else []
    if len(parts) != 3 or not parts[1].isdigit():
        raise token_invalid()
    try:
        meeting_id = ObjectId(parts[0])
    except (InvalidId, TypeError):
        raise token_invalid() from None
    step = int(parts[1])
    if not hmac.compare_digest(_mac(ctx, meeting_id, step), parts[2]):
        raise token_invalid()
    current = current_step(ctx, now)
    if step > current:
        raise token_invalid()
    if step < current - 1:
        raise DomainError("checkin_token_expired", "签到码已过期，请扫描会场屏幕上最新的二维码")
    return meeting_id


# -- the printed codes' scenes ------------------------------------------------------

def compact_id(meeting_id: ObjectId) -> str:
    return base64.urlsafe_b64encode(meeting_id.binary).decode()


def oa_scene(meeting: dict[str, Any]) -> str:
    """The official-account code's scene: ``checkin:<meeting>.<secret>``."""
    return f"{SCENE_PREFIX}{meeting['_id']}.{meeting['checkin_secret']}"


def mp_scene(meeting: dict[str, Any]) -> str:
    """The mini-program code's scene: compact id and secret, getwxacodeunlimit's 32 characters."""
    return compact_id(meeting["_id"]) + meeting["checkin_secret"]


def parse_scene(scene: str) -> tuple[ObjectId, str | None]:
    """``(meeting, secret)`` of either code's scene, else ``checkin_code_invalid``.

    A code printed before meetings had a secret (``checkin:<id>``, ``m=<id>``)
    gives the meeting and no secret: the check-in then refuses it as replaced.
    """
    if not isinstance(scene, str) or not 0 < len(scene) <= 64:
        raise code_invalid()
    try:
        if scene.startswith(SCENE_PREFIX):
            raw_id, _, secret = scene[len(SCENE_PREFIX):].partition(".")
            return ObjectId(raw_id), secret or None
        if scene.startswith("m="):
            return ObjectId(scene[2:]), None
        if len(scene) > COMPACT_ID_CHARS:
            raw = base64.urlsafe_b64decode(scene[:COMPACT_ID_CHARS].encode("ascii"))
            return ObjectId(raw), scene[COMPACT_ID_CHARS:]
    except (InvalidId, TypeError, ValueError, binascii.Error):
        pass
    raise code_invalid()


def png(data: str, box_size: int = 10) -> bytes:
    """A QR code as PNG (pure Python, no imaging library needed)."""
    out = io.BytesIO()
    qrcode.make(data, image_factory=qrcode.image.pure.PyPNGImage, box_size=box_size,
                border=2).save(out)
    return out.getvalue()


# -- WeChat-issued codes, made once and kept ------------------------------------------

# A temporary code lives until the meeting ends plus this margin (WeChat caps it at 30 days).
OA_QR_MARGIN = timedelta(hours=2)
# A stored code is remade only when a new one would live at least this much longer:
# a meeting more than 30 days ahead is not given a new code on every request.
OA_QR_RENEW_GAIN = timedelta(days=1)


def oa_qr_stale(meeting: dict[str, Any], now: datetime) -> bool:
    """No official-account code yet, or it expires before the meeting ends and could live longer."""
    qr = meeting.get("qr") or {}
    if not qr.get("oa_url") or not qr.get("oa_expires_at"):
        return True
    longest = now + timedelta(seconds=MAX_QR_EXPIRE_SECONDS) - OA_QR_RENEW_GAIN
    return qr["oa_expires_at"] < min(meeting["end"], longest)


async def _wechat(call: Awaitable[T]) -> T:
    try:
        return await call
    except WeChatError:
        raise Unavailable("wechat_unavailable", "微信服务暂时不可用，请稍后再试") from None


async def ensure_codes(ctx: AppContext, meeting: dict[str, Any],
                       now: datetime | None = None) -> dict[str, Any]:
    """Make through WeChat whichever printed code is missing (or stale); returns the meeting's ``qr``.

    Each code is stored by a conditional update naming the secret it carries
    and the code it replaces, so a renewal meanwhile (new secret) or a racing
    request never leaves a code of the wrong secret on the meeting; a loser's
    image is deleted, its temporary QR ticket simply expires.
    """
    now = now or ctx.clock.now()
    qr = dict(meeting.get("qr") or {})
    secret = meeting["checkin_secret"]
    if oa_qr_stale(meeting, now):
        seconds = int((meeting["end"] + OA_QR_MARGIN - now).total_seconds())
        seconds = max(60, min(seconds, MAX_QR_EXPIRE_SECONDS))
        created = await _wechat(oa_client(ctx).create_qrcode(oa_scene(meeting), expire_seconds=seconds))
        fresh = {"oa_ticket": created["ticket"], "oa_url": created["url"], "made_at": now,
                 "oa_expires_at": now + timedelta(seconds=created["expire_seconds"] or seconds)}
        if await meetings_model.update_one_if(
                ctx.db, meeting["_id"], {"checkin_secret": secret, "qr.oa_ticket": qr.get("oa_ticket")},
                {"$set": {f"qr.{k}": v for k, v in fresh.items()}}):
            qr.update(fresh)
    if qr.get("mp_code_file_id") is None:
        image = await _wechat(mp_client(ctx).get_wxacode_unlimit(
            mp_scene(meeting), page=ctx.settings.meetings.mp_checkin_page))
        new_id = await meetings_model.put_file(ctx.db, f"mp-code-{meeting['_id']}.png", image, "image/png",
                                               {"meeting_id": meeting["_id"], "kind": "mp_code"})
        if await meetings_model.update_one_if(
                ctx.db, meeting["_id"], {"checkin_secret": secret, "qr.mp_code_file_id": None},
                {"$set": {"qr.mp_code_file_id": new_id, "qr.made_at": now}}):
            qr.update(mp_code_file_id=new_id, made_at=now)
        else:
            await meetings_model.delete_file(ctx.db, new_id)
    return qr


def oa_qr_png(meeting: dict[str, Any]) -> bytes:
    """The stored official-account code drawn locally (``qrcode``) from its URL, for printing."""
    return png(meeting["qr"]["oa_url"])


async def mp_code_png(ctx: AppContext, meeting: dict[str, Any]) -> bytes | None:
    """The stored mini-program code image, or None when there is none (or it is gone)."""
    file_id = (meeting.get("qr") or {}).get("mp_code_file_id")
    stream = await meetings_model.open_file(ctx.db, file_id) if file_id is not None else None
    return await stream.read() if stream is not None else None
