"""A branch-month is judged by the branch as it was in that month (issue #13, item 8).

Importing members today used to make the branch's past months owe a 支委会 (the
requirement was recomputed from today's membership). Now each month's document
records its requirement: it follows the branch while the month runs, and nothing
rewrites it once the month has ended.
"""

from __future__ import annotations

import csv
import io
from datetime import date

from models import compliance as model
from tests.factories import member_fields
from tests.meetingkit import actor, add_members, held, light_city
from wxbackend.clock import parse_instant
from wxbackend.services.meetings import compliance
from wxbackend.services.orgs import importer, members
from wxbackend.services.orgs.import_sheet import COLUMNS

SEP, OCT, NOV = "2026-09", "2026-10", "2026-11"


def roster(n: int) -> bytes:
    """A CSV of ``n`` full members as a secretary fills in the import template."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(list(COLUMNS.values()))
    for i in range(n):
        row = member_fields(f"新党员{i}")
        writer.writerow([row.get(code, "") for code in COLUMNS])
    return out.getvalue().encode()


async def rollup(ctx, org_id, month):
    return (await model.rollups_of(ctx.db, [org_id], month)).get(org_id, 0)


def verdicts(year):
    return {s.month: (s.required["monthly"], s.missing, s.compliant) for s in year}


async def test_importing_members_now_does_not_move_judged_months(ctx):
    # September: the city is set up, the month opens (the daily job); A1 holds nothing.
    ctx.clock.set(parse_instant("2026-09-05"))
    city = await light_city(ctx)
    people = await add_members(ctx, city.branch_a1, 4)  # 4 full members: no 支委会 due
    assert (await compliance.open_running_month(ctx))["created"] == 3
    # October: a 主题党日 with attendance; November opens (and October is closed).
    ctx.clock.set(parse_instant("2026-10-08"))
    await compliance.open_running_month(ctx)
    await compliance.meeting_finished(ctx, await held(ctx, city.branch_a1, "theme_day", date(2026, 10, 8),
                                                      people, present=people))
    ctx.clock.set(parse_instant("2026-11-03"))
    await compliance.open_running_month(ctx)
    await compliance.meeting_finished(ctx, await held(ctx, city.branch_a1, "theme_day", date(2026, 11, 2),
                                                      people, present=people))
    sec = actor(city, "sec_a1")
    before = await compliance.branch_year(ctx, sec, city.org("branch_a1"), NOV)
    assert verdicts(before)[OCT] == (["theme_day"], [], True)
    # September is a quarter's last month: 支部党员大会 and 党课 were due too, no 支委会.
    assert verdicts(before)[SEP] == (["theme_day"], ["theme_day", "branch_assembly", "lecture"], False)
    assert before[-1].in_progress and before[-1].compliant

    # Now 3 members are imported: 7 full members, so a 支委会 is due from now on.
    result = await importer.import_file(ctx, sec, roster(3), "名册.csv", target_org_id=city.org("branch_a1"))
    assert result.ok, result
    after = await compliance.branch_year(ctx, sec, city.org("branch_a1"), NOV)
    for old, new in zip(before[:-1], after[:-1], strict=True):
        assert (new.required, new.missing, new.compliant) == (old.required, old.missing, old.compliant), old.month
    assert after[-2].basis == {"full_members": 4, "groups": 0}
    # The running month owes what the branch owes today, and the counters follow.
    assert after[-1].required["monthly"] == ["committee", "theme_day"]
    assert after[-1].missing == ["committee"] and after[-1].compliant is False
    assert await rollup(ctx, city.org("district_a"), NOV) == 0
    assert await rollup(ctx, city.org("district_a"), OCT) == 1

    # A meeting of October finished late still counts there, against October's requirement.
    late = await held(ctx, city.branch_a1, "lecture", date(2026, 10, 20), people, present=people)
    assert await compliance.meeting_finished(ctx, late) is True
    october = await compliance.branch_status(ctx, sec, city.org("branch_a1"), OCT)
    assert october.required["monthly"] == ["theme_day"] and october.compliant and october.counts["lecture"] == 1
    # The daily job does not touch ended months either.
    await compliance.open_running_month(ctx)
    assert verdicts(await compliance.branch_year(ctx, sec, city.org("branch_a1"), NOV))[OCT] == (
        ["theme_day"], [], True)


async def test_a_past_month_without_a_document_is_frozen_the_first_time_it_is_shown(ctx):
    # Months from before the daily opening existed have no document for a branch that
    # held nothing: the first page that shows one records the branch as it is then.
    ctx.clock.set(parse_instant("2026-07-10"))
    city = await light_city(ctx)
    await add_members(ctx, city.branch_a2, 5)
    sec = actor(city, "east")
    may = await compliance.branch_status(ctx, sec, city.org("branch_a2"), "2026-05")
    assert may.recorded and may.missing == ["theme_day"]
    assert await model.get(ctx.db, city.org("branch_a2"), "2026-05") is not None
    await add_members(ctx, city.branch_a2, 3, prefix="新")
    again = await compliance.branch_status(ctx, sec, city.org("branch_a2"), "2026-05")
    assert again.missing == ["theme_day"] and again.basis == {"full_members": 5, "groups": 0}
    july = await compliance.branch_status(ctx, sec, city.org("branch_a2"), "2026-07")
    assert july.in_progress and july.missing == ["committee", "theme_day"]


async def test_the_running_month_follows_the_branch_and_the_rollups_with_it(ctx):
    ctx.clock.set(parse_instant("2026-04-09"))
    city = await light_city(ctx)
    people = await add_members(ctx, city.branch_a1, 6)
    await compliance.meeting_finished(ctx, await held(ctx, city.branch_a1, "theme_day", date(2026, 4, 8),
                                                      people, present=people))
    assert await rollup(ctx, city.org("root"), "2026-04") == 1
    seventh = await add_members(ctx, city.branch_a1, 1, prefix="第七")
    # The daily job brings the running month in line (no page needs to be read).
    assert (await compliance.open_running_month(ctx))["aligned"] == 1
    doc = await model.get(ctx.db, city.org("branch_a1"), "2026-04")
    assert doc["required"]["monthly"] == ["committee", "theme_day"] and doc["compliant"] is False
    assert await rollup(ctx, city.org("root"), "2026-04") == 0
    # The member leaves again within the month: the requirement follows back.
    await members.set_state(ctx, actor(city, "sec_a1"), seventh[0]["_id"], "transferred_out")
    status = await compliance.branch_status(ctx, actor(city, "sec_a1"), city.org("branch_a1"), "2026-04")
    assert status.required["monthly"] == ["theme_day"] and status.compliant is True
    assert await rollup(ctx, city.org("root"), "2026-04") == 1


async def test_opening_a_month_is_idempotent_and_counts_the_branches_it_judges(ctx):
    ctx.clock.set(parse_instant("2026-02-02"))
    city = await light_city(ctx)
    first = await compliance.open_running_month(ctx)
    assert first == {"branches": 3, "created": 3, "aligned": 0}
    assert await compliance.open_running_month(ctx) == {"branches": 3, "created": 0, "aligned": 0}
    rolled = await model.rollup_docs(ctx.db, [(city.org(n), "2026-02") for n in ("root", "district_a")])
    assert [rolled[model.rollup_id(city.org(n), "2026-02")]["branches"] for n in ("root", "district_a")] == [3, 2]
    # Rebuilding from the documents gives the same counters.
    await compliance.rebuild_rollups(ctx, "2026-02")
    assert await model.rollup_docs(ctx.db, [(city.org(n), "2026-02") for n in ("root", "district_a")]) == rolled


async def test_the_job_is_declared_with_its_schedule(ctx):
    assert "compliance_months" in ctx.registry.crons
    assert ctx.settings.jobs.compliance_months.strip()
