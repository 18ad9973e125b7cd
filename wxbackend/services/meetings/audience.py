"""Who a meeting is for and what a branch can hold: the planning form's choices and their checks.

A branch holds a 支委会 only when it has a committee: one recorded
(``org.committee``) or, by DOMAIN.md, 7 or more full members
(``[meetings] compliance_committee_min_full``, the rule compliance applies);
a 党小组会 only when it has a 党小组. The form offers only those types and
:func:`check_type` refuses the others (``type_not_allowed``).

Chosen attendees (audience ``list``) must be current members of the branch
(:func:`check_audience`, ``member_not_in_branch``). The form picks them by name
(:func:`form_choices`): the whole branch as checkboxes, or, for a branch of more
than :data:`PICKER_LIST_MAX` members, a name search plus the members picked so far::

    choices = await form_choices(ctx, actor, org, picked=["65f0..."], query="王")
    choices.types        # {"branch_assembly": "支部党员大会", ...} the branch can hold
    choices.picker.choices[0].name, .hint, .picked
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId

from models import members as members_model
from models.enums import MEETING_TYPES, PARTY_STATUSES
from wxbackend.context import AppContext
from wxbackend.errors import DomainError, InvalidInput
from wxbackend.services import orgs
from wxbackend.services.accounts.access import Actor

# Above this many members a branch's picker searches by name instead of listing everyone.
PICKER_LIST_MAX = 300
# Members a name search shows at most.
SEARCH_LIMIT = 50
AUDIENCE_LABELS = {"branch": "全体党员", "committee": "支委会成员", "group": "党小组", "list": "指定党员"}


@dataclass(frozen=True)
class MemberChoice:
    """One checkbox of the picker: the name, and what tells namesakes apart."""

    id: str
    name: str
    hint: str        # "1985年生 · 正式党员"
    picked: bool


@dataclass(frozen=True)
class MemberPicker:
    choices: list[MemberChoice]
    searching: bool              # the branch is too large to list: search by name
    query: str = ""
    total: int = 0               # current members of the branch
    truncated: bool = False      # the search found more than it shows


@dataclass(frozen=True)
class FormChoices:
    types: dict[str, str]                        # meeting types the branch can hold
    audiences: dict[str, str]                    # audience kinds it can choose
    groups: list[tuple[str, str]] = field(default_factory=list)   # (id, name) of its 党小组
    picker: MemberPicker | None = None


async def branch_of(ctx: AppContext, org_id: str | ObjectId) -> dict[str, Any]:
    """Meetings belong to a branch; a 党小组's meeting belongs to its branch."""
    org = await orgs.get(ctx, orgs.parse_id(org_id))
    if org["type"] == "group":
        org = await orgs.get(ctx, org["parent_id"])
    if org["type"] != "branch" or org["status"] != "active":
        raise DomainError("not_a_branch", "只有正常状态的党支部可以组织三会一课")
    return org


def committee_ids(org: dict[str, Any]) -> list[ObjectId]:
    """The secretary and the recorded committee members (支委会成员), secretary first."""
    ids = [c["member_id"] for c in org.get("committee") or [] if c.get("member_id")]
    secretary = (org.get("secretary") or {}).get("member_id")
    return list(dict.fromkeys(([secretary] if secretary else []) + ids))


def has_committee(ctx: AppContext, org: dict[str, Any]) -> bool:
    """A committee recorded, or enough full members to have one (DOMAIN.md: 7 or more)."""
    return bool(org.get("committee")) or \
        org.get("full_member_count", 0) >= ctx.settings.meetings.compliance_committee_min_full


def allowed_types(ctx: AppContext, org: dict[str, Any], keep: str | None = None) -> dict[str, str]:
    """The meeting types the branch can hold; ``keep`` (a meeting's stored type) stays offered."""
    def can_hold(code: str) -> bool:
        if code == "committee":
            return has_committee(ctx, org)
        if code == "group":
            return org.get("child_count", 0) > 0
        return True
    return {code: label for code, label in MEETING_TYPES.items() if code == keep or can_hold(code)}


def check_type(ctx: AppContext, org: dict[str, Any], meeting_type: str, keep: str | None = None) -> None:
    if meeting_type in MEETING_TYPES and meeting_type not in allowed_types(ctx, org, keep):
        message = ("本支部未设立支部委员会，不能召开支委会" if meeting_type == "committee"
                   else "本支部没有党小组，不能召开党小组会")
        raise InvalidInput("type_not_allowed", message, details=[{"field": "type", "message": message}])


async def check_audience(ctx: AppContext, org: dict[str, Any], audience: dict[str, Any]) -> None:
    """The audience names only this branch's people: its group, its committee, its current members."""
    if audience["kind"] == "group":
        group = await orgs.get(ctx, audience["group_id"])
        if group.get("parent_id") != org["_id"] or group["type"] != "group":
            raise InvalidInput("group_invalid", "请选择本支部的党小组",
                               details=[{"field": "group_id", "message": "请选择本支部的党小组"}])
    if audience["kind"] == "committee" and not org.get("committee"):
        raise InvalidInput("no_committee", "本支部尚未记录支部委员会成员",
                           details=[{"field": "audience", "message": "本支部尚未记录支部委员会成员"}])
    if audience["kind"] == "list":
        await _check_members(ctx, org, audience["member_ids"])


async def _check_members(ctx: AppContext, org: dict[str, Any], member_ids: list[ObjectId]) -> None:
    rows = await members_model.by_ids(ctx.db, member_ids, {"org_id": 1, "state": 1})
    ours = {r["_id"] for r in rows if r["org_id"] == org["_id"] and r.get("state") == "active"}
    strangers = [i for i in member_ids if i not in ours]
    if strangers:
        message = f"所选党员中有{len(strangers)}人不是本支部的在册党员，请重新选择"
        raise InvalidInput("member_not_in_branch", message,
                           details=[{"field": "member_ids", "message": message}])


# -- the form's choices -----------------------------------------------------------------

CHOICE_FIELDS = {"name": 1, "birth_date": 1, "party_status": 1, "org_id": 1, "state": 1}


def _choice(row: dict[str, Any], picked: set[ObjectId]) -> MemberChoice:
    year = (row.get("birth_date") or "")[:4]
    hint = " · ".join(p for p in (f"{year}年生" if year else "",
                                  PARTY_STATUSES.get(row.get("party_status", ""), "")) if p)
    return MemberChoice(str(row["_id"]), row["name"], hint, row["_id"] in picked)


def _ids(raw: list[str]) -> list[ObjectId]:
    found = []
    for text in raw:
        try:
            found.append(ObjectId(str(text).strip()))
        except (InvalidId, TypeError):
            continue
    return list(dict.fromkeys(found))


async def member_picker(ctx: AppContext, org: dict[str, Any], picked: list[str],
                        query: str = "") -> MemberPicker:
    """The branch's current members to choose from, by name, the picked ones ticked.

    A large branch (its maintained ``member_count`` above :data:`PICKER_LIST_MAX`)
    is not listed: the picked members, then those whose name starts with ``query``.
    """
    chosen = _ids(picked)
    wanted = set(chosen)
    total = org.get("member_count", 0)
    query = query.strip()[:20]

    def current(row: dict[str, Any]) -> bool:
        return row["org_id"] == org["_id"] and row.get("state") == "active"

    if total <= PICKER_LIST_MAX:
        rows = await members_model.in_orgs(ctx.db, [org["_id"]], CHOICE_FIELDS)
        return MemberPicker([_choice(r, wanted) for r in rows if current(r)], False, query, total)
    ticked = [r for r in await members_model.by_ids(ctx.db, chosen, CHOICE_FIELDS) if current(r)]
    ticked.sort(key=lambda r: (r["name"], r["_id"]))
    found: list[dict[str, Any]] = []
    if query:
        found = await members_model.search_name(ctx.db, [org["_id"]], query, SEARCH_LIMIT + 1)
    truncated = len(found) > SEARCH_LIMIT
    found = [r for r in found[:SEARCH_LIMIT] if current(r) and r["_id"] not in wanted]
    return MemberPicker([_choice(r, wanted) for r in ticked + found], True, query, total, truncated)


async def form_choices(ctx: AppContext, actor: Actor, org: dict[str, Any], *, keep_type: str | None = None,
                       keep_audience: str | None = None, picked: list[str] | None = None,
                       query: str = "") -> FormChoices:
    """What the planning form offers for ``org``'s branch (``meeting.manage`` there).

    ``keep_type`` and ``keep_audience`` (an edited meeting's own) stay offered.
    """
    branch = await branch_of(ctx, org["_id"])
    actor.require("meeting.manage", branch["org_ancestors"])
    groups = [(str(g["_id"]), g["name"]) for g in await orgs.children(ctx, actor, branch)
              if g["type"] == "group" and g.get("status", "active") == "active"]
    audiences = {kind: label for kind, label in AUDIENCE_LABELS.items()
                 if kind == keep_audience
                 or ((kind != "committee" or branch.get("committee")) and (kind != "group" or groups))}
    return FormChoices(allowed_types(ctx, branch, keep_type), audiences, groups,
                       await member_picker(ctx, branch, picked or [], query))
