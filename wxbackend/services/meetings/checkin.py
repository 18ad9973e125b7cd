"""Meeting check-in: one service behind the ways in, at most one mark per member.

Every way but the secretary's carries proof of being there (:class:`Proof`);
the meeting id alone, which each invited member's list shows, proves nothing.
The ways in, each recorded as ``how`` on the mark:

- ``rotating``: the code on the secretary's screen, a token that changes every
  ``rotating_step_seconds`` (:mod:`~wxbackend.services.meetings.checkin_codes`),
  so a photo sent home stops working; scanned with the mini-program;
- ``mp_code``: the printed mini-program code, whose scene carries the meeting's
  secret; the page it opens posts that scene;
- ``oa_qr``: the printed official-account QR code (scene
  ``checkin:<meeting>.<secret>``), answered in chat (``meetings.chat.oa_scan``);
- ``manual``: the secretary marks someone present (audited).

A meeting marked ``rotating_only`` refuses the printed codes (a printout can be
photographed; the screen's code cannot be kept). A meeting with coordinates
(``geo``) wants the phone's position within ``[meetings] checkin_radius_meters``
as well, so the official-account scan, which has none, is refused there.

Every way ends in :func:`check_in`, whose write is an insert of the mark
keyed by meeting and member (``models.attendance``: a second one fails), then
the counters' increment through the meeting's check-in gate, which proves the
meeting still has the open status, start and end the rules were checked
against (else it is read; if it changed, the mark is taken back and the scan
judged again): retries, racing scans and a meeting cancelled or moved
meanwhile record nothing twice. Scans arriving together share one
such round (:mod:`wxbackend.services.meetings.checkin_batch`): a hall of
members scanning at once is a few writes, not one per member, and their cost
does not grow with the meeting. The proof is checked against the cached
meeting header, so it costs no database round trip.
As pretix's redeem with a nonce: the same scan sent twice (same nonce) gets the
same answer::

    result = await check_in(ctx, meeting_id, member, "mp_code", proof=Proof(secret=s), nonce="a1b2")
    result.code   # "checked_in" | "already_checked_in"; result.at is the first time

Refusals are :class:`~wxbackend.errors.DomainError` with codes
``meeting_not_found``, ``meeting_cancelled``, ``meeting_not_open``,
``checkin_window_closed``, ``checkin_not_expected``, ``out_of_scope``,
``not_bound``, ``member_inactive``, ``checkin_proof_required``,
``checkin_token_invalid``, ``checkin_token_expired``, ``checkin_code_invalid``,
``checkin_rotating_only``, ``checkin_location_required``, ``checkin_too_far``.
"""

from __future__ import annotations

import hmac
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from cachetools import TTLCache

from models import attendance as attendance_model
from models import meetings as meetings_model
from models import members as members_model
from wxbackend.clock import SHANGHAI
from wxbackend.context import AppContext
from wxbackend.errors import (
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthorized,
    object_id,
)
from wxbackend.services.accounts import audit, mpsessions
from wxbackend.services.accounts.access import Actor
from wxbackend.services.meetings import checkin_batch, checkin_codes

# How long a process trusts its copy of a meeting's check-in rules (seconds).
# The write checks status, start and end (the check-in gate, models.meetings.add_marks), so
# only audience edits, and writes made around models.meetings, can lag by this much.
HEADER_TTL = 2.0
# Meetings whose header a process keeps (the least recently scanned go first).
HEADERS_KEPT = 1000
HEADER_FIELDS = {"org_id": 1, "org_ancestors": 1, "title": 1, "status": 1, "start": 1, "end": 1,
                 "expected": 1, "allow_branch_members": 1, "online_link": 1}
# What the proof is checked against; kept apart so HEADER_FIELDS' users never read the secret.
PROOF_FIELDS = {"checkin_secret": 1, "rotating_only": 1, "geo": 1}
HOW_LABELS = {"oa_qr": "公众号扫码", "mp_code": "小程序码", "rotating": "现场动态码",
              "manual": "书记代签", "online": "线上参会", "leave": "请假"}
# A physical check-in replaces these marks (a member on leave or online who came after all).
UPGRADABLE = ("excused", "online")


@dataclass
class CheckinResult:
    code: str                 # checked_in | already_checked_in
    meeting_id: ObjectId
    title: str
    at: datetime              # the first check-in's time
    how: str
    status: str = "present"

    @property
    def message(self) -> str:
        local = self.at.astimezone(SHANGHAI).strftime("%H:%M")
        if self.code == "checked_in":
            return f"签到成功：{self.title}（{local}）"
        return f"已签到：{self.title}，首次签到时间 {local}"


@dataclass(frozen=True)
class Proof:
    """What a member shows to be at the meeting: one code, and where the phone is if asked."""

    token: str | None = None                      # the rotating code on the screen
    secret: str | None = None                     # the secret a printed code's scene carries
    location: tuple[float, float] | None = None   # (latitude, longitude), GCJ-02 as wx.getLocation


def parse_meeting_id(raw: str | ObjectId) -> ObjectId:
    return object_id(raw, "meeting_not_found", "会议不存在")


# -- the rules ----------------------------------------------------------------------

async def _header(ctx: AppContext, meeting_id: ObjectId, fresh: bool = False) -> dict[str, Any]:
    """The fields the rules need, cached briefly: a 1,000-member meeting is one big document.

    One read serves every scan that needs it at the same moment (a cache
    that expires under a hall of scanners must not send them all to MongoDB).
    """
    state = _state(ctx)
    doc = None if fresh else state.headers.get(meeting_id)
    if doc is None:
        doc = await state.header_loader.get(meeting_id)
    if doc is None:
        raise NotFound("meeting_not_found", "会议不存在")
    return doc


class CheckinState:
    """A process's check-in machinery: meeting headers (the least recently used go first,
    each for ``HEADER_TTL``), the loaders that coalesce concurrent reads."""

    def __init__(self, ctx: AppContext) -> None:
        self.headers: TTLCache[ObjectId, dict[str, Any]] = TTLCache(HEADERS_KEPT, HEADER_TTL)

        async def headers(ids: list[Any]) -> dict[Any, Any]:
            found = {}
            for meeting_id in ids:  # almost always one: the meeting being scanned into
                doc = await meetings_model.checkin_header(ctx.db, meeting_id, HEADER_FIELDS | PROOF_FIELDS)
                if doc is not None:
                    doc["expected_set"] = frozenset(doc.get("expected") or ())
                    self.headers[meeting_id] = found[meeting_id] = doc
            return found

        async def members(ids: list[Any]) -> dict[Any, Any]:
            return {m["_id"]: m for m in await members_model.by_ids(ctx.db, ids, MEMBER_FIELDS)}

        self.header_loader = checkin_batch.Coalescer(headers)
        self.member_loader = checkin_batch.Coalescer(members, MEMBER_BATCH)


def _state(ctx: AppContext) -> CheckinState:
    return ctx.state(CheckinState, lambda: CheckinState(ctx))


def forget(ctx: AppContext, meeting_id: ObjectId) -> None:
    """Drop this process's copy after a change (other processes follow within HEADER_TTL)."""
    _state(ctx).headers.pop(meeting_id, None)


def check_rules(ctx: AppContext, meeting: dict[str, Any], member: dict[str, Any],
                now: datetime) -> None:
    """Raise the reason this member may not check in now, if any."""
    status = meeting["status"]
    if status == "cancelled":
        raise DomainError("meeting_cancelled", f"会议“{meeting['title']}”已取消")
    if status == "draft":
        raise DomainError("meeting_not_open", "会议尚未发布")
    if member.get("state", "active") != "active":
        raise Forbidden("member_inactive", "您的党籍状态不是“正常”，不能签到")
    if member["org_id"] != meeting["org_id"]:
        raise Forbidden("out_of_scope", "这不是您所在党支部的会议")
    expected = meeting.get("expected_set")
    if expected is None:
        expected = frozenset(meeting.get("expected") or ())
    if member["_id"] not in expected and not meeting.get("allow_branch_members"):
        raise Forbidden("checkin_not_expected", "您不在本次会议的参会人员名单中")
    opens = meeting["start"] - timedelta(minutes=ctx.settings.meetings.checkin_open_minutes)
    if now < opens:
        local = opens.astimezone(SHANGHAI).strftime("%m月%d日 %H:%M")
        raise DomainError("checkin_window_closed", f"签到尚未开始，{local}起可签到")
    if now > meeting["end"] or status == "finished":
        raise DomainError("checkin_window_closed", "会议已结束，签到已关闭")


EARTH_RADIUS_M = 6_371_008.8


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle (haversine) distance in metres between two (latitude, longitude) points."""
    lat1, lng1, lat2, lng2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lng2 - lng1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def check_proof(ctx: AppContext, meeting: dict[str, Any], how: str, proof: Proof | None,
                now: datetime) -> None:
    """Raise unless ``proof`` shows the member is at this meeting (CPU only: the header has it all)."""
    if how == "manual":
        return  # the secretary's own act, audited
    proof = proof or Proof()
    if how == "rotating":
        if not proof.token or checkin_codes.verify_token(ctx, proof.token, now) != meeting["_id"]:
            raise checkin_codes.token_invalid()
    else:
        if meeting.get("rotating_only"):
            raise DomainError("checkin_rotating_only", "本次会议只接受会场屏幕上的动态签到码，请扫描屏幕上的二维码")
        if proof.secret is None and how == "mp_code":
            raise DomainError("checkin_proof_required", "请扫描会场的签到码签到")
        stored = meeting.get("checkin_secret")
        if not stored or not proof.secret or not hmac.compare_digest(stored.encode(), proof.secret.encode()):
            raise checkin_codes.code_invalid()
    place = meeting.get("geo")
    if place:
        if how == "oa_qr":
            raise DomainError("checkin_location_required",
                              "本次会议需定位签到，请用微信小程序扫描会场的小程序签到码或屏幕动态码")
        if proof.location is None:
            raise DomainError("checkin_location_required", "本次会议需定位签到，请允许小程序获取您的位置后重新扫码")
        radius = ctx.settings.meetings.checkin_radius_meters
        if distance_m((place["lat"], place["lng"]), proof.location) > radius:
            raise DomainError("checkin_too_far", f"您不在会场附近（{radius}米内），无法签到")


async def check_in(ctx: AppContext, meeting_id: ObjectId, member: dict[str, Any], how: str, *,
                   proof: Proof | None = None, nonce: str | None = None, by: Actor | None = None,
                   now: datetime | None = None) -> CheckinResult:
    """Record ``member`` present at the meeting, once; see the module docstring.

    Every way but ``manual`` needs ``proof`` (checked after the rules, so a
    member early or of another branch hears that first).
    """
    assert how in meetings_model.CHECKIN_HOWS
    now = now or ctx.clock.now()
    # BSON keeps milliseconds: answer with the time a later read will show.
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    for fresh in (False, True):
        meeting = await _header(ctx, meeting_id, fresh=fresh)
        check_rules(ctx, meeting, member, now)
        check_proof(ctx, meeting, how, proof, now)
        mark: dict[str, Any] = {"status": "present", "how": how, "at": now}
        if nonce:
            mark["nonce"] = nonce
        if by is not None:
            mark["by"] = by.name
        outcome = await checkin_batch.writer_for(ctx, meeting).submit(member["_id"], mark)
        if outcome is not None:
            written, stored = outcome
            if written == "new":
                return CheckinResult("checked_in", meeting_id, meeting["title"], now, how)
            return await _answer_existing(ctx, meeting, member["_id"], stored, mark, nonce)
        # Status, start or end changed under us: judge again, afresh.
    raise DomainError("checkin_retry", "会议信息刚刚变更，请重新扫码签到")


async def _existing_mark(ctx: AppContext, meeting_id: ObjectId,
                         member_id: ObjectId) -> dict[str, Any] | None:
    return await attendance_model.get(ctx.db, meeting_id, member_id)


async def _answer_existing(ctx: AppContext, meeting: dict[str, Any], member_id: ObjectId,
                           existing: dict[str, Any], mark: dict[str, Any],
                           nonce: str | None) -> CheckinResult:
    if existing["status"] in UPGRADABLE and await _upgrade(ctx, meeting, member_id, existing, mark):
        return CheckinResult("checked_in", meeting["_id"], meeting["title"], mark["at"], mark["how"])
    code = "checked_in" if nonce and existing.get("nonce") == nonce else "already_checked_in"
    if existing["status"] in UPGRADABLE:  # upgraded meanwhile by a racing scan
        existing = await _existing_mark(ctx, meeting["_id"], member_id) or existing
    return CheckinResult(code, meeting["_id"], meeting["title"], existing["at"], existing["how"],
                         existing["status"])


async def _upgrade(ctx: AppContext, meeting: dict[str, Any], member_id: ObjectId,
                   existing: dict[str, Any], mark: dict[str, Any]) -> bool:
    """Online or on leave, yet here in person: present replaces the mark (only the mark as it
    was read: one winner), then the counters move by that change."""
    upgraded = {**mark, "replaced": existing["status"]}
    if not await attendance_model.replace_if(ctx.db, meeting["_id"], member_id,
                                             {"status": existing["status"], "at": existing["at"]}, upgraded):
        return False
    if not await meetings_model.matches(ctx.db, meeting["_id"], {
            "status": {"$in": list(meetings_model.OPEN_STATUSES)}, "start": meeting["start"], "end": meeting["end"]}):
        # Closed or moved meanwhile: the mark goes back to what it was.
        if await attendance_model.replace_if(ctx.db, meeting["_id"], member_id,
                                             {"status": "present", "at": mark["at"], "how": mark["how"]}, existing):
            await attendance_model.add_counts(ctx.db, meeting["_id"], {"removed": 1})  # boards: read again
        return False
    await attendance_model.add_counts(ctx.db, meeting["_id"], {"present": 1, existing["status"]: -1})
    return True


# -- the ways in --------------------------------------------------------------------

async def check_in_member(ctx: AppContext, meeting_id: str | ObjectId | None, member: dict[str, Any],
                          how: str | None = None, *, token: str | None = None, scene: str | None = None,
                          location: tuple[float, float] | None = None, nonce: str | None = None,
                          now: datetime | None = None) -> CheckinResult:
    """The mini-program's check-in: the screen's ``token`` (rotating) or a printed code's ``scene`` (mp_code).

    ``how`` may be left out (the proof says which); ``meeting_id`` too, when
    the request names no meeting: the token or scene does.
    """
    now = now or ctx.clock.now()
    if how is None:
        if token and scene:
            raise InvalidInput("checkin_method_invalid", "一次只能出示一个签到码")
        # Nothing shown: judged as a printed code without its scene, refused after the rules.
        how = "rotating" if token else "mp_code"
    if how not in ("rotating", "mp_code"):
        raise InvalidInput("checkin_method_invalid", "签到方式无效")
    secret = None
    if how == "mp_code" and scene is not None:
        scene_meeting, secret = checkin_codes.parse_scene(scene)
        secret = secret or ""  # a code printed before secrets existed: shown, but replaced
        if meeting_id is not None and scene_meeting != parse_meeting_id(meeting_id):
            raise checkin_codes.code_invalid()  # another meeting's code
        meeting_id = scene_meeting
    elif meeting_id is None:
        if how == "mp_code":
            raise DomainError("checkin_proof_required", "请扫描会场的签到码签到")
        meeting_id = checkin_codes.verify_token(ctx, token or "", now)
    return await check_in(ctx, parse_meeting_id(meeting_id), member, how, nonce=nonce, now=now,
                          proof=Proof(token=token if how == "rotating" else None, secret=secret,
                                      location=location))


# What the rules need of a member; loaded for many concurrent scans at once.
MEMBER_FIELDS = {"name": 1, "state": 1, "org_id": 1, "mp_openid": 1, "oa_openid": 1}
# SecantusDB's "_id $in" costs ~0.15 ms of its CPU per id up to ~50 ids, twice that beyond.
MEMBER_BATCH = 40


async def check_in_session(ctx: AppContext, session: Any, meeting_id: str | ObjectId | None,
                           how: str | None = None, *, token: str | None = None, scene: str | None = None,
                           location: tuple[float, float] | None = None,
                           nonce: str | None = None) -> CheckinResult:
    """The mini-program's check-in for a bound session (``mpsessions.MemberSession``).

    The member is read fresh, but together with the other scans of the moment
    (one query for all), and must still be bound to the session's openid.
    """
    member = await _state(ctx).member_loader.get(session.member_id) if session.member_id else None
    if member is None or member.get("mp_openid") != session.openid:
        await mpsessions.revoke(ctx, session)
        raise Unauthorized("token_invalid", "登录已失效，请重新登录")
    return await check_in_member(ctx, meeting_id, member, how, token=token, scene=scene,
                                 location=location, nonce=nonce)


async def manual_check_in(ctx: AppContext, actor: Actor, meeting_id: str | ObjectId,
                          member_id: str | ObjectId) -> CheckinResult:
    """The secretary marks a member present (the window still applies); audited."""
    meeting_id = parse_meeting_id(meeting_id)
    meeting = await _header(ctx, meeting_id, fresh=True)
    actor.require("meeting.manage", meeting["org_ancestors"])
    try:
        member = await members_model.get(ctx.db, ObjectId(member_id))
    except (InvalidId, TypeError):
        member = None
    if member is None:
        raise NotFound("member_not_found", "找不到该党员")
    result = await check_in(ctx, meeting_id, member, "manual", by=actor)
    if result.code == "checked_in":
        await audit.record(ctx, actor, "meeting.manual_checkin", "meeting", meeting_id,
                           meeting["title"], meeting["org_ancestors"],
                           {"member_id": str(member["_id"]), "member": member["name"]})
    return result
