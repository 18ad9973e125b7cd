"""The codes members check in with: the rotating on-screen code, QR images, WeChat's codes.

- The rotating code on the secretary's screen is ``<meeting>.<step>.<mac>``: an
  HMAC-SHA256 over meeting id and time step (``rotating_step_seconds``), keyed by
  HKDF from ``security.secret_key``; the current and the previous step are
  accepted, so a photo sent home stops working within a step.
- The official account's temporary QR code (scene ``checkin:<meeting>``) and the
  mini-program code (scene ``m=<meeting>``) are created through WeChat once and
  kept on the meeting (GridFS for the image), so every printout shows the same.

Refusals: ``checkin_token_invalid``, ``checkin_token_expired``, ``wechat_unavailable``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
from datetime import datetime, timedelta
from typing import Any

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
MP_SCENE_PREFIX = "m="
# HKDF "info": a key for this purpose only, never the cookie-signing key itself.
TOKEN_KEY_INFO = b"wxbackend/meeting-checkin/rotating-code/v1"
TOKEN_MAC_BYTES = 16


class TokenKey:
    """The rotating code's key: derived once per process, never the cookie-signing key itself."""

    def __init__(self, secret_key: str) -> None:
        self.key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                        info=TOKEN_KEY_INFO).derive(secret_key.encode())


# -- the rotating on-screen code ----------------------------------------------------

def _mac(ctx: AppContext, meeting_id: ObjectId, step: int) -> str:
    digest = hmac.new(ctx.state(TokenKey, lambda: TokenKey(ctx.settings.security.secret_key)).key, f"{meeting_id}.{step}".encode(), hashlib.sha256).digest()
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
        raise DomainError("checkin_token_invalid", "签到码无效，请扫描会场屏幕上的二维码")
    try:
        meeting_id = ObjectId(parts[0])
    except (InvalidId, TypeError):
        raise DomainError("checkin_token_invalid", "签到码无效，请扫描会场屏幕上的二维码") from None
    step = int(parts[1])
    if not hmac.compare_digest(_mac(ctx, meeting_id, step), parts[2]):
        raise DomainError("checkin_token_invalid", "签到码无效，请扫描会场屏幕上的二维码")
    current = current_step(ctx, now)
    if step > current:
        raise DomainError("checkin_token_invalid", "签到码无效，请扫描会场屏幕上的二维码")
    if step < current - 1:
        raise DomainError("checkin_token_expired", "签到码已过期，请扫描会场屏幕上最新的二维码")
    return meeting_id


# -- QR images ----------------------------------------------------------------------

def png(data: str, box_size: int = 10) -> bytes:
    """A QR code as PNG (pure Python, no imaging library needed)."""
    out = io.BytesIO()
    qrcode.make(data, image_factory=qrcode.image.pure.PyPNGImage, box_size=box_size,
                border=2).save(out)
    return out.getvalue()


def oa_scene(meeting_id: ObjectId) -> str:
    return f"{SCENE_PREFIX}{meeting_id}"


def mp_scene(meeting_id: ObjectId) -> str:
    """getwxacodeunlimit scene: at most 32 characters, so the bare id with a short prefix."""
    return f"{MP_SCENE_PREFIX}{meeting_id}"


# -- WeChat-issued codes, fetched once and kept ---------------------------------------

# A temporary code lives until the meeting ends plus this margin (WeChat caps it at 30 days).
OA_QR_MARGIN = timedelta(hours=2)
OA_QR_REFRESH_BEFORE = timedelta(minutes=10)


async def oa_qr(ctx: AppContext, meeting: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """The meeting's temporary official-account QR code ``{ticket, url, expires_at}``.

    Created through ``qrcode/create`` (QR_STR_SCENE, scene ``checkin:<meeting>``)
    the first time and whenever the stored one is about to expire; kept on the
    meeting so every printout and screen shows the same code.
    """
    now = now or ctx.clock.now()
    qr = meeting.get("qr") or {}
    if qr.get("oa_url") and qr.get("oa_expires_at") and qr["oa_expires_at"] - OA_QR_REFRESH_BEFORE > now:
        return {"ticket": qr["oa_ticket"], "url": qr["oa_url"], "expires_at": qr["oa_expires_at"]}
    seconds = int((meeting["end"] + OA_QR_MARGIN - now).total_seconds())
    seconds = max(60, min(seconds, MAX_QR_EXPIRE_SECONDS))
    try:
        created = await oa_client(ctx).create_qrcode(oa_scene(meeting["_id"]), expire_seconds=seconds)
    except WeChatError:
        raise Unavailable("wechat_unavailable", "微信服务暂时不可用，请稍后再试") from None
    expires = now + timedelta(seconds=created["expire_seconds"] or seconds)
    await meetings_model.update_one_if(ctx.db, meeting["_id"], {}, {"$set": {
        "qr.oa_ticket": created["ticket"], "qr.oa_url": created["url"], "qr.oa_expires_at": expires}})
    return {"ticket": created["ticket"], "url": created["url"], "expires_at": expires}


async def oa_qr_png(ctx: AppContext, meeting: dict[str, Any]) -> bytes:
    """The official-account code drawn locally (``qrcode``) from its URL, for printing."""
    return png((await oa_qr(ctx, meeting))["url"])


async def mp_code_png(ctx: AppContext, meeting: dict[str, Any]) -> bytes:
    """The mini-program code (getwxacodeunlimit), fetched once and kept in GridFS."""
    file_id = (meeting.get("qr") or {}).get("mp_code_file_id")
    if file_id is not None:
        stream = await meetings_model.open_file(ctx.db, file_id)
        if stream is not None:
            return await stream.read()
    try:
        image = await mp_client(ctx).get_wxacode_unlimit(mp_scene(meeting["_id"]),
                                                         page=ctx.settings.meetings.mp_checkin_page)
    except WeChatError:
        raise Unavailable("wechat_unavailable", "微信服务暂时不可用，请稍后再试") from None
    new_id = await meetings_model.put_file(ctx.db, f"mp-code-{meeting['_id']}.png", image, "image/png",
                                           {"meeting_id": meeting["_id"], "kind": "mp_code"})
    # Two racing first requests: the first to store wins, the other's copy goes.
    if not await meetings_model.update_one_if(ctx.db, meeting["_id"], {"qr.mp_code_file_id": file_id},
                                              {"$set": {"qr.mp_code_file_id": new_id}}):
        await meetings_model.delete_file(ctx.db, new_id)
    return image
