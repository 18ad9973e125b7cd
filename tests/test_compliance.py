"""三会一课 compliance: the rule, idempotent maintenance, roll-ups, races, scope."""

from __future__ import annotations

import asyncio
from datetime import date

import pytest

from models import compliance as model
from models import meetings as meetings_model
from tests.meetingkit import actor as actor_of
from tests.meetingkit import add_members, build, held, light_city
from wxbackend.clock import parse_instant
from wxbackend.errors import Forbidden, InvalidInput
from wxbackend.services import meetings
from wxbackend.services.meetings import compliance

JAN, FEB, MAR = date(2026, 1, 10), date(2026, 2, 10), date(2026, 3, 10)


@pytest.fixture
async def city(ctx):
    return await light_city(ctx)


@pytest.fixture
async def a1_members(ctx, city):
    return await add_members(ctx, city.branch_a1, 4)


async def rollup(ctx, org_id, month):
    return (await model.rollups_of(ctx.db, [org_id], month)).get(org_id, 0)


async def test_a_theme_day_with_attendance_makes_a_plain_branch_compliant_in_a_normal_month(
        ctx, city, a1_members):
    meeting = await held(ctx, city.branch_a1, "theme_day", JAN, a1_members, present=a1_members[:3])
    assert await compliance.meeting_finished(ctx, meeting) is True
    doc = await model.get(ctx.db, city.org("branch_a1"), "2026-01")
    assert doc["compliant"] is True and doc["counts"] == {"theme_day": 1}
    assert doc["quarter"] == "2026-Q1" and doc["org_ancestors"] == city.branch_a1["org_ancestors"]
    assert await rollup(ctx, city.org("district_a"), "2026-01") == 1
    assert await rollup(ctx, city.org("root"), "2026-01") == 1
    assert await rollup(ctx, city.org("branch_a1"), "2026-01") == 0  # branches have no roll-up
    east = await compliance.committee_summary(ctx, actor_of(city, "east"), city.org("district_a"), "2026-01")
    assert (east.branches, east.compliant, east.non_compliant) == (2, 1, 1)
    # The branch without any meeting (no document) is the non-compliant child.
    assert [row.org["_id"] for row in east.failing_children] == [city.org("branch_a2")]
    assert east.failing_children[0].status.missing == ["theme_day"]
    whole = await compliance.committee_summary(ctx, actor_of(city, "city"), city.org("root"), "2026-01")
    assert (whole.branches, whole.compliant, whole.non_compliant) == (3, 1, 2)
    assert {r.org["_id"]: r.non_compliant for r in whole.children} == {
        city.org("district_a"): 1, city.org("district_b"): 1}


async def test_quarterly_types_are_judged_in_the_quarters_last_month(ctx, city, a1_members):
    march = await held(ctx, city.branch_a1, "theme_day", MAR, a1_members, present=a1_members)
    await compliance.meeting_finished(ctx, march)
    status = await compliance.branch_status(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), "2026-03")
    assert status.compliant is False and status.missing == ["branch_assembly", "lecture"]
    assert status.quarter_judged is True
    # A 支部党员大会 in January and a 党课 in February satisfy March's quarterly check.
    for meeting_type, day in (("branch_assembly", JAN), ("lecture", FEB)):
        await compliance.meeting_finished(ctx, await held(ctx, city.branch_a1, meeting_type, day, a1_members,
                                                          present=a1_members))
    status = await compliance.branch_status(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), "2026-03")
    assert status.compliant is True and status.missing == []
    assert status.quarter_counts == {"branch_assembly": 1, "lecture": 1}
    # January and February lack a 主题党日 and stay non-compliant; only March counts up.
    for month, expected in (("2026-01", 0), ("2026-02", 0), ("2026-03", 1)):
        assert await rollup(ctx, city.org("district_a"), month) == expected, month


async def test_december_also_judges_the_yearly_life_meeting(ctx, city, a1_members):
    dec = date(2026, 12, 5)
    for meeting_type in ("theme_day", "branch_assembly", "lecture"):
        await compliance.meeting_finished(ctx, await held(ctx, city.branch_a1, meeting_type, dec, a1_members,
                                                          present=a1_members))
    doc = await model.get(ctx.db, city.org("branch_a1"), "2026-12")
    assert doc["compliant"] is False and compliance.missing_types(doc) == ["life_meeting"]
    life = await held(ctx, city.branch_a1, "life_meeting", date(2026, 6, 1), a1_members, present=a1_members)
    await compliance.meeting_finished(ctx, life)
    doc = await model.get(ctx.db, city.org("branch_a1"), "2026-12")
    assert doc["compliant"] is True and doc["year_counts"] == {"life_meeting": 1}


async def test_branches_with_a_committee_or_groups_owe_those_meetings_monthly(ctx, city):
    people = await add_members(ctx, city.branch_a2, 7)  # 7 full members: a 支委会 is due
    meeting = await held(ctx, city.branch_a2, "theme_day", JAN, people, present=people)
    await compliance.meeting_finished(ctx, meeting)
    doc = await model.get(ctx.db, city.org("branch_a2"), "2026-01")
    assert doc["required"]["monthly"] == ["committee", "theme_day"]
    assert doc["compliant"] is False and compliance.missing_types(doc) == ["committee"]
    await compliance.meeting_finished(ctx, await held(ctx, city.branch_a2, "committee", JAN, people[:3],
                                                      present=people[:3]))
    assert (await model.get(ctx.db, city.org("branch_a2"), "2026-01"))["compliant"] is True


async def test_attendance_rate_does_not_count_excused_members_as_absent(ctx, city):
    people = await add_members(ctx, city.branch_a1, 10)
    meeting = await held(ctx, city.branch_a1, "theme_day", JAN, people, present=people[:6],
                         online=people[6:7], excused=people[7:9])
    await compliance.meeting_finished(ctx, meeting)
    status = await compliance.branch_status(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), "2026-01")
    assert (status.expected, status.attended, status.excused) == (10, 7, 2)
    assert status.rate == pytest.approx(7 / 8)


async def test_finishing_twice_or_concurrently_counts_once(ctx, city, a1_members):
    meeting = await held(ctx, city.branch_a1, "branch_assembly", MAR, a1_members, present=a1_members)
    results = await asyncio.gather(*(compliance.meeting_finished(ctx, meeting) for _ in range(10)))
    assert results.count(True) == 1
    assert await compliance.meeting_finished(ctx, meeting) is False
    doc = await model.get(ctx.db, city.org("branch_a1"), "2026-03")
    assert doc["counts"] == {"branch_assembly": 1} and doc["quarter_counts"] == {"branch_assembly": 1}
    assert doc["expected_sum"] == 4 and doc["attended_sum"] == 4


async def test_different_meetings_racing_into_a_new_month_are_all_counted(ctx, city, a1_members):
    batch = [await held(ctx, city.branch_a1, "theme_day", JAN, a1_members, present=a1_members)
             for _ in range(8)]
    await asyncio.gather(*(compliance.meeting_finished(ctx, m) for m in batch))
    doc = await model.get(ctx.db, city.org("branch_a1"), "2026-01")
    assert doc["counts"] == {"theme_day": 8} and doc["attended_sum"] == 32 and doc["compliant"] is True
    assert await rollup(ctx, city.org("district_a"), "2026-01") == 1
    # Taking them all back concurrently leaves the roll-up at exactly zero.
    await asyncio.gather(*(compliance.meeting_unfinished(ctx, m) for m in batch))
    doc = await model.get(ctx.db, city.org("branch_a1"), "2026-01")
    assert doc["counts"] == {"theme_day": 0} and doc["attended_sum"] == 0 and doc["compliant"] is False
    assert await rollup(ctx, city.org("district_a"), "2026-01") == 0


async def test_unfinished_takes_back_exactly_what_was_counted_and_only_once(ctx, city, a1_members):
    assembly = await held(ctx, city.branch_a1, "branch_assembly", JAN, a1_members, present=a1_members)
    lecture = await held(ctx, city.branch_a1, "lecture", MAR, a1_members, present=a1_members)
    theme = await held(ctx, city.branch_a1, "theme_day", MAR, a1_members, present=a1_members)
    for meeting in (assembly, lecture, theme):
        await compliance.meeting_finished(ctx, meeting)
    assert await rollup(ctx, city.org("district_a"), "2026-03") == 1
    assert await compliance.meeting_unfinished(ctx, assembly) is True
    assert await compliance.meeting_unfinished(ctx, assembly) is False
    march = await model.get(ctx.db, city.org("branch_a1"), "2026-03")
    assert march["compliant"] is False and march["quarter_counts"]["branch_assembly"] == 0
    january = await model.get(ctx.db, city.org("branch_a1"), "2026-01")
    assert january["counts"]["branch_assembly"] == 0 and str(assembly["_id"]) not in january["meetings"]
    assert await rollup(ctx, city.org("district_a"), "2026-03") == 0
    assert await rollup(ctx, city.org("root"), "2026-03") == 0


async def test_meetings_that_do_not_count_change_nothing(ctx, city, a1_members):
    empty = await held(ctx, city.branch_a1, "theme_day", JAN, a1_members)  # no attendance recorded
    planned = await held(ctx, city.branch_a1, "theme_day", JAN, a1_members, present=a1_members, status="planned")
    district = await held(ctx, city.district_a, "lecture", JAN, a1_members, present=a1_members)
    for meeting in (empty, planned, district):
        assert await compliance.meeting_finished(ctx, meeting) is False
    assert await model.get(ctx.db, city.org("branch_a1"), "2026-01") is None
    assert await model.get(ctx.db, city.org("district_a"), "2026-01") is None
    assert await compliance.meeting_unfinished(ctx, empty) is False


async def test_finish_through_the_meetings_service_is_counted_once(ctx, city, a1_members):
    ctx.clock.set(parse_instant("2026-01-10T18:00+08:00"))  # after the meeting's start: it may finish
    doc = build(city.branch_a1, "theme_day", JAN, a1_members, status="in_progress")
    await meetings_model.insert(ctx.db, doc)
    for member in a1_members[:2]:
        assert await meetings_model.mark_attendance(ctx.db, doc["_id"], member["_id"],
                                                    {"status": "present", "how": "manual"})
    await meetings.finish(ctx, actor_of(city, "sec_a1"), doc["_id"])
    stored = await model.get(ctx.db, city.org("branch_a1"), "2026-01")
    assert stored["compliant"] is True and stored["attended_sum"] == 2 and stored["expected_sum"] == 4


async def test_rebuilt_rollups_equal_the_maintained_ones(ctx, city, a1_members):
    b1 = await add_members(ctx, city.branch_b1, 3)
    for org, people in ((city.branch_a1, a1_members), (city.branch_b1, b1)):
        await compliance.meeting_finished(ctx, await held(ctx, org, "theme_day", FEB, people, present=people))
    maintained = await model.rollups_of(ctx.db, [city.org(n) for n in ("root", "district_a", "district_b")],
                                        "2026-02")
    rebuilt = await compliance.rebuild_rollups(ctx, "2026-02")
    assert rebuilt == maintained == {city.org("root"): 2, city.org("district_a"): 1, city.org("district_b"): 1}


async def test_moving_a_branch_carries_its_compliant_months_to_the_new_committee(ctx, city, a1_members):
    from wxbackend.services import orgs

    await compliance.meeting_finished(ctx, await held(ctx, city.branch_a1, "theme_day", FEB, a1_members,
                                                      present=a1_members))
    await orgs.move(ctx, actor_of(city, "city"), city.org("branch_a1"), city.org("district_b"))
    assert await rollup(ctx, city.org("district_a"), "2026-02") == 0
    assert await rollup(ctx, city.org("district_b"), "2026-02") == 1
    assert await rollup(ctx, city.org("root"), "2026-02") == 1
    maintained = await model.rollups_of(ctx.db, [city.org(n) for n in ("root", "district_a", "district_b")],
                                        "2026-02")
    rebuilt = await compliance.rebuild_rollups(ctx, "2026-02")
    assert {k: v for k, v in maintained.items() if v} == rebuilt


async def test_compliance_views_are_scoped_and_validate_the_month(ctx, city):
    with pytest.raises(Forbidden):
        await compliance.branch_status(ctx, actor_of(city, "sec_a1"), city.org("branch_b1"), "2026-01")
    with pytest.raises(Forbidden):
        await compliance.committee_summary(ctx, actor_of(city, "east"), city.org("district_b"), "2026-01")
    for bad in ("2026-13", "2026-1", "26-01", "2026-01-01"):
        with pytest.raises(InvalidInput):
            await compliance.committee_summary(ctx, actor_of(city, "east"), city.org("district_a"), bad)


def test_periods():
    assert compliance.quarter_of("2026-11") == "2026-Q4"
    assert compliance.quarter_months("2026-05") == ["2026-04", "2026-05", "2026-06"]
    assert compliance.quarter_end("2026-01") == "2026-03" and compliance.year_end("2026-01") == "2026-12"
    assert compliance.shift_month("2026-01", -1) == "2025-12" and compliance.shift_month("2025-12", 13) == "2027-01"
