"""The application clock, and the rules that read it, on the dates that matter.

Every calendar rule reads ``ctx.clock``; these tests set it to an ordinary month,
each quarter-end month, December, January, and both sides of midnight on the
last day of a month in Asia/Shanghai (still the same day in UTC until 16:00 UTC).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from bson import ObjectId

from handlers.admin_compliance import compliance_panel
from tests.conftest import ADMIN_PASSWORD, actor_of, make_settings
from tests.meetingkit import actor, add_members, held, light_city
from wxbackend import jobs
from wxbackend.clock import SHANGHAI, Clock, parse_instant
from wxbackend.context import AppContext
from wxbackend.services import notify, orgs
from wxbackend.services.meetings import compliance
from wxbackend.services.notify import Recipient, digest, outbox

# (clock, the month it is in Shanghai, types a branch with only a 主题党日 still owes)
QUARTERLY = ["branch_assembly", "lecture"]
DATES = [
    ("2027-05-14", "2027-05", []),
    ("2027-03-31", "2027-03", QUARTERLY),
    ("2027-06-30T23:30+08:00", "2027-06", QUARTERLY),
    ("2027-09-30", "2027-09", QUARTERLY),
    ("2027-12-31", "2027-12", [*QUARTERLY, "life_meeting"]),
    ("2028-01-01", "2028-01", []),
    ("2027-04-30T23:59+08:00", "2027-04", []),
    ("2027-05-01T00:30+08:00", "2027-05", []),  # 2027-04-30 16:30 in UTC
]


# -- the clock -------------------------------------------------------------------------------

def test_a_bare_date_is_mid_morning_in_shanghai_and_a_date_time_is_taken_as_written():
    assert parse_instant("2027-03-31") == datetime(2027, 3, 31, 10, tzinfo=SHANGHAI)
    assert parse_instant("2027-06-30T23:30+08:00") == datetime(2027, 6, 30, 15, 30, tzinfo=UTC)
    assert parse_instant("2027-06-30T23:30") == datetime(2027, 6, 30, 23, 30, tzinfo=SHANGHAI)
    with pytest.raises(ValueError):
        parse_instant("31/03/2027")


def test_the_day_and_month_are_shanghais_not_utcs():
    clock = Clock.starting_at(datetime(2027, 4, 30, 23, 59, tzinfo=SHANGHAI))
    assert (clock.today(), clock.month()) == (date(2027, 4, 30), "2027-04")
    clock.set(datetime(2027, 5, 1, 0, 30, tzinfo=SHANGHAI))
    assert clock.now().date() == date(2027, 4, 30)  # UTC is still on the last day
    assert (clock.today(), clock.month()) == (date(2027, 5, 1), "2027-05")


def test_a_set_clock_keeps_running_and_can_be_advanced():
    start = datetime(2028, 1, 1, 10, tzinfo=SHANGHAI)
    clock = Clock.starting_at(start)
    first = clock.now()
    assert timedelta(0) <= first - start < timedelta(seconds=5)
    assert clock.now() >= first
    clock.advance(timedelta(days=31))
    assert clock.month() == "2028-02"
    with pytest.raises(ValueError):
        clock.set(datetime(2028, 1, 1))  # naive: which zone?


def test_ids_made_now_fall_inside_a_range_taken_from_the_shifted_clock():
    clock = Clock.starting_at(datetime(2031, 7, 1, tzinfo=UTC))
    made = ObjectId()  # the driver stamps the system clock's time
    assert clock.id_at(clock.now() - timedelta(minutes=1)) < made < clock.id_at(clock.now() + timedelta(minutes=1))


async def test_the_offset_setting_shifts_a_processs_clock(servers, tmp_path, caplog):
    settings = make_settings(servers, tmp_path, WXB_CLOCK_OFFSET_SECONDS=str(400 * 86400))
    context = await AppContext.connect(settings, servers.mongodb_uri, servers.redis_url)
    try:
        assert context.clock.today() == (datetime.now(UTC) + timedelta(days=400)).astimezone(SHANGHAI).date()
        assert "WXB_CLOCK_OFFSET_SECONDS" in caplog.text  # an operator sees it in the log
    finally:
        await context.close()


# -- 三会一课: "this month" is the clock's month ----------------------------------------------

@pytest.mark.parametrize("when, month, owed", DATES, ids=[d[0] for d in DATES])
async def test_this_months_compliance_follows_the_clock(ctx, when, month, owed):
    ctx.clock.set(parse_instant(when))
    city = await light_city(ctx)
    people = await add_members(ctx, city.branch_a1, 3)
    meeting = await held(ctx, city.branch_a1, "theme_day", ctx.clock.today(), people, present=people)
    assert meeting["month"] == month
    await compliance.meeting_finished(ctx, meeting)
    panel = await compliance_panel(ctx, actor(city, "sec_a1"), await orgs.get(ctx, city.org("branch_a1")))
    assert panel["this"].month == month
    assert panel["this"].missing == owed and panel["this"].compliant is (not owed)
    assert panel["last"].month == compliance.shift_month(month, -1)
    # The clock's month is in progress (已开展 / 待开展), the month before it judged.
    assert (panel["this"].phase, panel["last"].phase) == ("running", "closed")


@pytest.mark.parametrize("when, month", [("2027-04-30T23:59+08:00", "2027-04"),
                                         ("2027-05-01T00:30+08:00", "2027-05")])
async def test_the_committee_page_opens_on_shanghais_month(ctx, city, web, when, month):
    ctx.clock.set(parse_instant(when))
    await web.login("east", ADMIN_PASSWORD)
    page = await web.get(f"/admin/orgs/{city.org('district_a')}/compliance")
    assert page.status_code == 200 and f"东区区委 · {month} 三会一课落实情况" in page.text


# -- terms, digests and the outbox's days ----------------------------------------------------

@pytest.mark.parametrize("when, overdue", [("2027-02-28T23:59+08:00", False),
                                           ("2027-03-01T00:01+08:00", True)])
async def test_a_term_ending_on_the_last_of_february_is_overdue_from_march(ctx, city, web, when, overdue):
    ctx.clock.set(parse_instant(when))
    await orgs.update_details(ctx, actor_of(city, "city"), city.org("branch_a1"), term_start="2024-02-29",
                              term_years=3, category=None)
    await web.login("city", ADMIN_PASSWORD)
    page = await web.get(f"/admin/orgs/{city.org('branch_a1')}")
    assert page.status_code == 200 and "至 2027-02-28" in page.text
    assert ("换届逾期" in page.text) is overdue


@pytest.mark.parametrize("when, day", [("2027-06-30T23:59+08:00", "2027-06-30"),
                                       ("2027-07-01T00:30+08:00", "2027-07-01")])
async def test_notifications_count_on_shanghais_day(ctx, city, when, day):
    ctx.clock.set(parse_instant(when))
    result = await notify.notify(ctx, [Recipient(user_id=city.users["sec_a1"]["_id"])], "digest",
                                 {"headline": "测试", "date": day, "items": "一项"}, subject=f"t:{when}")
    assert result.created == 1
    counts = await outbox.day_counts(ctx, actor_of(city, "city"), city.org("root"), days=2)
    assert counts[0]["day"] == day and counts[0]["total"] == 1
    assert counts[1]["day"] == (date.fromisoformat(day) - timedelta(days=1)).isoformat()
    assert counts[1]["total"] == 0


async def test_the_daily_digest_is_for_shanghais_day(ctx, city):
    ctx.clock.set(datetime(2028, 1, 1, 0, 5, tzinfo=SHANGHAI))  # 2027-12-31 in UTC
    assert await digest.schedule_digests(ctx) == 1  # sec_a1, the one secretary
    job_ids = {k.decode() for k in await ctx.redis.zrange(ctx.settings.jobs.queue_name, 0, -1)}
    assert job_ids == {f"digest:2028-01-01:{city.users['sec_a1']['_id']}:1"}


async def test_a_job_deferred_to_an_application_instant_waits_that_long_on_the_system_clock(ctx):
    ctx.clock.set(datetime(2030, 1, 1, tzinfo=UTC))  # arq knows nothing of the shift
    await jobs.enqueue(ctx, "deliver", [], _job_id="deferred",
                       _defer_until=ctx.clock.now() + timedelta(minutes=10))
    score = await ctx.redis.zscore(ctx.settings.jobs.queue_name, "deferred")
    assert abs(score / 1000 - (time.time() + 600)) < 5


# -- one clock ---------------------------------------------------------------------------------

CALENDAR_READS = re.compile(r"\b(datetime\.(now|utcnow|today)|date\.today)\(")


def test_only_the_clock_reads_the_calendar():
    """Services, handlers, models and jobs read the date from ctx.clock, nowhere else."""
    root = Path(__file__).resolve().parent.parent
    offenders = [f"{path.relative_to(root)}:{number}"
                 for folder in ("wxbackend", "handlers", "models")
                 for path in sorted((root / folder).rglob("*.py")) if path.name != "clock.py"
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if CALENDAR_READS.search(line.split("#")[0])]
    assert not offenders, "read ctx.clock instead: " + ", ".join(offenders)
