"""Meetings for the tests of comments, votes, compliance and the ledger.

Documents are built with the meetings model's own ``new_meeting`` (the data
contract), so these tests read what engineer A's code writes::

    meeting = await held(ctx, branch, "theme_day", date(2026, 1, 10), present=members[:3])
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from bson import ObjectId

from models import meetings as meetings_model
from tests.conftest import City
from tests.factories import member_fields
from wxbackend.clock import SHANGHAI
from wxbackend.context import AppContext
from wxbackend.services import orgs
from wxbackend.services.accounts import mpsessions
from wxbackend.services.accounts.access import Actor, Role
from wxbackend.services.orgs import binding, members

SYSTEM = Actor.system_actor("tests")


# The conftest city's users, as (role, organisation attribute): actors without
# accounts, so that a test does not pay for five argon2 hashes it never checks.
ROLES = {"city": ("city_admin", "root"), "east": ("committee_admin", "district_a"),
         "west": ("committee_admin", "district_b"), "sec_a1": ("secretary", "branch_a1"),
         "auditor_a": ("auditor", "district_a")}


async def light_city(ctx: AppContext) -> City:
    """The conftest city's organisations (same names and codes), without user accounts."""
    made: dict[str, dict[str, Any]] = {}
    for key, parent, name, org_type, code in [
            ("root", None, "中共示范市委员会", "committee", "ROOT"),
            ("district_a", "root", "东区区委", "committee", "DA"),
            ("district_b", "root", "西区区委", "committee", "DB"),
            ("branch_a1", "district_a", "东区第一党支部", "branch", "A1"),
            ("branch_a2", "district_a", "东区第二党支部", "branch", "A2"),
            ("branch_b1", "district_b", "西区第一党支部", "branch", "B1")]:
        made[key] = await orgs.create(ctx, SYSTEM, made[parent]["_id"] if parent else None, name=name,
                                      org_type=org_type, category="organ", code=code)
    return City(users={}, **made)


def actor(city: City, username: str) -> Actor:
    role, org = ROLES[username]
    return Actor(id=ObjectId(), name=username, roles=[Role(role, city.org(org))], ip="127.0.0.1")


async def add_members(ctx: AppContext, org: dict[str, Any], n: int, prefix: str = "党员") -> list[dict[str, Any]]:
    return [await members.create(ctx, SYSTEM, org["_id"], member_fields(f"{prefix}{i + 1}"))
            for i in range(n)]


async def phone_member(ctx: AppContext, org: dict[str, Any], name: str) -> tuple[dict[str, Any], str]:
    """A member bound to the mini-program, and a bearer token of theirs (no WeChat round trip)."""
    fields = member_fields(name)
    await members.create(ctx, SYSTEM, org["_id"], fields)
    openid = f"o{ObjectId()}"
    member = await binding.bind(ctx, "mp", openid, None, fields["name"], fields["id_card"],
                                fields["phone"], "127.0.0.1")
    token = await mpsessions.open_session(ctx, openid=openid, unionid=None,
                                          session_key="tiihtNczf5v6AKRyjwEUhQ==", member_id=member["_id"])
    return member, token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def local_start(day: date, hour: int = 15) -> datetime:
    return datetime.combine(day, time(hour), SHANGHAI).astimezone(UTC)


def mark(status: str, how: str, at: datetime) -> dict[str, Any]:
    return {"status": status, "how": how, "at": at}


def build(org: dict[str, Any], meeting_type: str, day: date, expected: list[dict[str, Any]], *,
          status: str = "finished", present: list[dict[str, Any]] = (), online: list[dict[str, Any]] = (),
          excused: list[dict[str, Any]] = (), title: str = "", **fields: Any) -> dict[str, Any]:
    start = local_start(day)
    attendance = {str(m["_id"]): mark("present", "manual", start) for m in present}
    attendance.update({str(m["_id"]): mark("online", "online", start) for m in online})
    attendance.update({str(m["_id"]): mark("excused", "leave", start) for m in excused})
    return meetings_model.new_meeting(
        org, meeting_type, title or f"{day:%m}月{meeting_type}", start, start + timedelta(hours=2),
        {"user_id": None, "name": "书记"}, SHANGHAI, now=start - timedelta(days=7), status=status,
        expected=[m["_id"] for m in expected], expected_count=len(expected), attendance=attendance,
        counts={"present": len(present), "online": len(online), "excused": len(excused)},
        finished_at=start + timedelta(hours=2) if status == "finished" else None, **fields)


async def held(ctx: AppContext, org: dict[str, Any], meeting_type: str, day: date,
               expected: list[dict[str, Any]] | None = None, **kwargs: Any) -> dict[str, Any]:
    """Insert a meeting (finished by default) and return its document."""
    present = kwargs.get("present", ())
    doc = build(org, meeting_type, day, list(expected if expected is not None else present), **kwargs)
    await meetings_model.insert(ctx.db, doc)
    return doc


async def reload(ctx: AppContext, meeting_id: ObjectId) -> dict[str, Any]:
    """The meeting as stored, with its marks (their own documents) as an ``attendance`` map."""
    return await meetings_model.with_marks(ctx.db, await meetings_model.get(ctx.db, meeting_id))
