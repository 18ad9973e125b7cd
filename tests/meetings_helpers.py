"""Helpers of the meeting and check-in tests: a small town, members, meetings under way.

``build_town`` (each test module's ``town`` fixture) builds a district with two branches and the actors who
work on them without creating admin users (whose password hashing would cost
seconds a test); the web tests that log in use conftest's ``city`` instead::

    async def test_x(ctx, town):
        people = await add_people(ctx, town, 3)
        meeting = await live_meeting(ctx, town)     # whole branch expected; started 10 min ago
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId

from models import meetings as meetings_model
from tests.factories import member_fields
from wxbackend.clock import SHANGHAI
from wxbackend.context import AppContext
from wxbackend.services import meetings, orgs
from wxbackend.services.accounts.access import Actor, Role
from wxbackend.services.meetings import printed_codes
from wxbackend.services.orgs import binding, members

SYSTEM = Actor.system_actor("tests")


@dataclass
class Town:
    district: dict[str, Any]
    branch: dict[str, Any]        # 东城第一党支部: where the meetings are
    other: dict[str, Any]         # 西城党支部: another branch
    secretary: Actor              # of ``branch``
    district_admin: Actor         # committee admin of the district (both branches)
    outsider: Actor               # secretary of ``other``


def _actor(name: str, role: str, org: dict[str, Any]) -> Actor:
    return Actor(id=ObjectId(), name=name, roles=[Role(role, org["_id"])], ip="127.0.0.1")


async def build_town(ctx: AppContext) -> Town:
    root = await orgs.create(ctx, SYSTEM, None, name="中共测试市委员会", org_type="committee",
                             category="organ", code="T")
    district = await orgs.create(ctx, SYSTEM, root["_id"], name="东城区委", org_type="committee",
                                 category="organ", code="T1")
    branch = await orgs.create(ctx, SYSTEM, district["_id"], name="东城第一党支部", org_type="branch",
                               category="community", code="T1-1")
    other = await orgs.create(ctx, SYSTEM, district["_id"], name="西城党支部", org_type="branch",
                              category="organ", code="T1-2")
    return Town(district, branch, other, _actor("王书记", "secretary", branch),
                _actor("区委管理员", "committee_admin", district), _actor("李书记", "secretary", other))


async def add_people(ctx: AppContext, town: Town, n: int, *, other: bool = False,
                     prefix: str = "党员") -> list[dict[str, Any]]:
    """New members; each document carries its form fields under ``fields`` (not stored)."""
    org = town.other if other else town.branch
    people = []
    for i in range(n):
        fields = member_fields(f"{prefix}{i + 1}")
        doc = await members.create(ctx, SYSTEM, org["_id"], fields)
        people.append({**doc, "fields": fields})
    return people


def plan_fields(start: datetime, minutes: int = 90, **extra: Any) -> dict[str, Any]:
    return {"type": "theme_day", "title": "三月主题党日", "topic": "学习党章", "place": "党员活动室",
            "start": start, "end": start + timedelta(minutes=minutes), **extra}


async def planned_meeting(ctx: AppContext, town: Town, start: datetime, **extra: Any) -> dict[str, Any]:
    """Created and published by the branch's secretary."""
    draft = await meetings.create(ctx, town.secretary, town.branch["_id"], plan_fields(start, **extra))
    return await meetings.publish(ctx, town.secretary, draft["_id"])


async def live_meeting(ctx: AppContext, town: Town, **extra: Any) -> dict[str, Any]:
    """Published; started 10 minutes ago, ends in 80: check-in is open."""
    return await planned_meeting(ctx, town, ctx.clock.now() - timedelta(minutes=10), **extra)


async def past_meeting(ctx: AppContext, town: Town, days_ago: int,
                       expected: list[dict[str, Any]]) -> dict[str, Any]:
    """A finished meeting of the past, written directly (publishing refuses past times)."""
    start = ctx.clock.now().replace(microsecond=0) - timedelta(days=days_ago)
    doc = meetings_model.new_meeting(town.branch, "lecture", "往期党课", start, start + timedelta(hours=1),
                                     {"user_id": None, "name": "王书记"}, SHANGHAI,
                                     now=start - timedelta(days=7), status="finished",
                                     expected=[m["_id"] for m in expected], expected_count=len(expected))
    await meetings_model.insert(ctx.db, doc)
    return doc


async def bind(ctx: AppContext, member: dict[str, Any], channel: str, openid: str) -> dict[str, Any]:
    """Bind a member as the binding page or the mini-program would."""
    fields = member["fields"]
    return await binding.bind(ctx, channel, openid, None, fields["name"], fields["id_card"],
                              fields["phone"], "127.0.0.1")


async def reload(ctx: AppContext, meeting: dict[str, Any]) -> dict[str, Any]:
    """The meeting as stored, with its marks (their own documents) as an ``attendance`` map."""
    return await meetings_model.with_marks(ctx.db, await meetings_model.get(ctx.db, meeting["_id"]))


async def notices(ctx: AppContext, people: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Which meeting notices each person got (their notification inbox): ``{name: [kind, ...]}``, oldest first."""
    from wxbackend.services import notify

    got: dict[str, list[str]] = {}
    for person in people:
        items, _ = await notify.inbox(ctx, person["_id"], None, 50)
        got[person["name"]] = [i.doc["kind"] for i in reversed(items) if i.doc["kind"].startswith("meeting_")]
    return got


async def make_codes(ctx: AppContext, meeting: dict[str, Any]) -> dict[str, Any]:
    """Run the printed-codes job as the worker would after publication; the meeting as stored then."""
    assert await printed_codes.make_codes(ctx, str(meeting["_id"])) == "made"
    return await reload(ctx, meeting)


async def phone_through_wechat(api: Any, sandbox: Any, member: dict[str, Any], openid: str) -> dict[str, str]:
    """The mini-program's way in: wx.login through the sandbox, our login, binding; a bearer header."""
    code = await sandbox.login_code(openid)
    login = await api.post("/api/v1/auth/login", json={"code": code})
    assert login.status_code == 200, login.text
    header = {"Authorization": f"Bearer {login.json()['token']}"}
    fields = member["fields"]
    bound = await api.post("/api/v1/me/bind", headers=header, json={
        "name": fields["name"], "id_card": fields["id_card"], "phone": fields["phone"]})
    assert bound.status_code == 200, bound.text
    return header
