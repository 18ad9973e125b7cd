"""Votes (投票表决) during a meeting: single or multiple choice, named or anonymous.

The secretary creates a vote on a meeting and closes it; attendees (present
or online) cast one ballot each while it is open; results are shown to
everybody only once it is closed.

Casting, in an order that keeps the totals exact under retries and races:

1. claim "one member, one ballot": insert the named ballot, or for an
   anonymous vote the voter record, under the unique id "<vote>:<member>"
   (a second cast, however concurrent, hits the duplicate key: ``already_voted``);
2. add the choices to the vote's totals with ``status: open`` in the filter,
   so a ballot is counted exactly when it arrived before the close (closing is
   the conditional ``open -> closed`` on the same document); a ballot that lost
   that race gives its claim back and is refused with ``vote_closed``;
3. anonymous only: store the choices in a ballot with a random id, no member
   and no time.

A process dying between 1 and 2 leaves a claim without a count (the member
cannot vote again): the one loss this order allows, against never counting
a ballot twice or after the close.

Example::

    vote = await votes.create(ctx, actor, meeting_id, "表决：发展对象张三", ["同意", "不同意", "弃权"])
    await votes.cast(ctx, member, vote["_id"], [0])
    await votes.close(ctx, actor, vote["_id"])
"""

from __future__ import annotations

import secrets
from typing import Any

from bson import ObjectId

from models import meetings as meetings_model
from models import votes as model
from wxbackend.context import AppContext
from wxbackend.errors import Conflict, DomainError, InvalidInput, NotFound
from wxbackend.services import meetings
from wxbackend.services.accounts import audit
from wxbackend.services.accounts.access import Actor
from wxbackend.services.meetings import comments

MAX_TITLE = 100
MAX_OPTION = 50
MAX_OPTIONS = 20
MAX_VOTES_PER_MEETING = 50
# A vote is taken in a meeting that has not ended or been cancelled.
VOTABLE_MEETING = ("draft", "planned", "in_progress")


def _parse(raw: str | ObjectId) -> ObjectId:
    return comments.parse_id(raw, "vote_not_found", "表决")


async def get_vote(ctx: AppContext, vote_id: str | ObjectId) -> dict[str, Any]:
    vote = await model.get(ctx.db, _parse(vote_id))
    if vote is None:
        raise NotFound("vote_not_found", "表决不存在")
    return vote


def clean(title: str, options: list[str]) -> tuple[str, list[str]]:
    title = (title or "").strip()
    if not title or len(title) > MAX_TITLE:
        raise InvalidInput("vote_title", f"表决事项不能为空，且不超过{MAX_TITLE}字")
    options = [(o or "").strip() for o in options]
    options = [o for o in options if o]
    if not 2 <= len(options) <= MAX_OPTIONS or any(len(o) > MAX_OPTION for o in options):
        raise InvalidInput("vote_options", f"选项应为2-{MAX_OPTIONS}个，每个不超过{MAX_OPTION}字")
    if len(set(options)) != len(options):
        raise InvalidInput("vote_options", "选项不能重复")
    return title, options


async def create(ctx: AppContext, actor: Actor, meeting_id: str | ObjectId, title: str,
                 options: list[str], *, multiple: bool = False, anonymous: bool = False) -> dict[str, Any]:
    meeting = await meetings.view(ctx, actor, meeting_id)
    actor.require("meeting.manage", meeting["org_ancestors"])
    title, options = clean(title, options)
    if meeting["status"] not in VOTABLE_MEETING:
        raise DomainError("meeting_not_open", "会议已结束或已取消，不能发起表决")
    if meeting.get("vote_count", 0) >= MAX_VOTES_PER_MEETING:
        raise DomainError("too_many_votes", f"一次会议最多发起{MAX_VOTES_PER_MEETING}项表决")
    now = ctx.clock.now()
    vote = {"_id": ObjectId(), "meeting_id": meeting["_id"], "org_id": meeting["org_id"],
            "org_ancestors": list(meeting["org_ancestors"]), "title": title, "options": options,
            "multiple": bool(multiple), "anonymous": bool(anonymous), "status": "open",
            "counts": [0] * len(options), "ballots": 0,
            "created_by": {"id": actor.id, "name": actor.name}, "created_at": now,
            "closed_at": None, "closed_by": None}
    await model.insert(ctx.db, vote)
    await meetings_model.update_one_if(ctx.db, meeting["_id"], {}, {"$inc": {"vote_count": 1}})
    await audit.record(ctx, actor, "vote.create", "vote", vote["_id"], title, vote["org_ancestors"],
                       {"meeting_id": str(meeting["_id"]), "anonymous": vote["anonymous"]})
    return vote


async def close(ctx: AppContext, actor: Actor, vote_id: str | ObjectId) -> dict[str, Any]:
    """open -> closed; closing a closed vote returns it unchanged (one close, one audit entry)."""
    vote = await get_vote(ctx, vote_id)
    actor.require("meeting.manage", vote["org_ancestors"])
    now = ctx.clock.now()
    closed = await model.update_if(ctx.db, vote["_id"], {"status": "open"}, {"$set": {
        "status": "closed", "closed_at": now, "closed_by": {"id": actor.id, "name": actor.name}}})
    if closed is None:
        return await get_vote(ctx, vote["_id"])
    await audit.record(ctx, actor, "vote.close", "vote", vote["_id"], vote["title"], vote["org_ancestors"],
                       {"ballots": closed["ballots"]})
    return closed


def clean_choices(vote: dict[str, Any], choices: list[int]) -> list[int]:
    if not choices or any(type(i) is not int or not 0 <= i < len(vote["options"]) for i in choices):
        raise InvalidInput("bad_choices", "请选择有效的选项")
    if len(set(choices)) != len(choices):
        raise InvalidInput("bad_choices", "同一选项不能重复选择")
    if not vote["multiple"] and len(choices) != 1:
        raise InvalidInput("bad_choices", "本项表决为单选，只能选择一项")
    return sorted(choices)


async def visible_vote(ctx: AppContext, member: dict[str, Any], vote_id: str | ObjectId,
                       mark: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """(vote, meeting) for a member who may see the meeting; out_of_scope otherwise."""
    vote = await get_vote(ctx, vote_id)
    fields = comments.own_mark(member) if mark else comments.MEETING_HEAD
    meeting = await meetings.for_member(ctx, member, vote["meeting_id"], fields)
    return vote, meeting


async def cast(ctx: AppContext, member: dict[str, Any], vote_id: str | ObjectId,
               choices: list[int]) -> dict[str, Any]:
    """One ballot per attendee; returns the vote as counted."""
    vote, meeting = await visible_vote(ctx, member, vote_id, mark=True)
    comments.require_attended(meeting, member, "参加表决")
    picked = clean_choices(vote, choices)
    if vote["status"] != "open":
        raise Conflict("vote_closed", "表决已结束")
    key = model.voter_key(vote["_id"], member["_id"])
    now = ctx.clock.now()
    if vote["anonymous"]:
        claim_in, claim = model.VOTERS, {"_id": key, "vote_id": vote["_id"]}
    else:
        claim_in, claim = model.BALLOTS, {"_id": key, "vote_id": vote["_id"], "member_id": member["_id"],
                                          "name": member["name"], "choices": picked, "at": now}
    if not await model.claim(ctx.db, claim_in, claim):
        raise Conflict("already_voted", "您已参加过本项表决")
    if not await model.count_ballot(ctx.db, vote["_id"], picked):
        await model.release(ctx.db, claim_in, key)
        raise Conflict("vote_closed", "表决已结束")
    if vote["anonymous"]:
        # Random id, no member, no time: nothing links these choices to the voter record.
        await model.insert_ballot(ctx.db, {"_id": secrets.token_hex(12), "vote_id": vote["_id"],
                                           "choices": picked})
    return await get_vote(ctx, vote["_id"])


async def of_meeting_for_member(ctx: AppContext, member: dict[str, Any],
                                meeting_id: str | ObjectId) -> tuple[list[dict[str, Any]], set[ObjectId]]:
    """The meeting's votes, and which of them the member has voted in."""
    meeting = await meetings.for_member(ctx, member, meeting_id, comments.MEETING_HEAD)
    found = await model.of_meeting(ctx.db, meeting["_id"], MAX_VOTES_PER_MEETING)
    return found, await voted_in(ctx, member, found)


async def voted_in(ctx: AppContext, member: dict[str, Any], found: list[dict[str, Any]]) -> set[ObjectId]:
    keys = {model.voter_key(v["_id"], member["_id"]): v["_id"] for v in found}
    return {keys[k] for k in await model.have_voted(ctx.db, list(keys))}


async def of_meeting_for_admin(ctx: AppContext, actor: Actor,
                               meeting_id: str | ObjectId) -> list[dict[str, Any]]:
    meeting = await meetings.view(ctx, actor, meeting_id)
    return await model.of_meeting(ctx.db, meeting["_id"], MAX_VOTES_PER_MEETING)


async def named_ballots(ctx: AppContext, actor: Actor, vote: dict[str, Any]) -> list[dict[str, Any]]:
    """Who chose what: a named vote's ballots, for the secretary once the vote is closed."""
    actor.require("meeting.view", vote["org_ancestors"])
    if vote["anonymous"] or vote["status"] != "closed":
        return []
    return await model.named_ballots(ctx.db, vote["_id"])


def results(vote: dict[str, Any]) -> list[int] | None:
    """The totals, or None while the vote is open (results are hidden until it closes)."""
    return list(vote["counts"]) if vote["status"] == "closed" else None
