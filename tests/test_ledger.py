"""Work ledger (工作台账) and the compliance pages: month lists, entries, Excel, scope."""

from __future__ import annotations

import io
from datetime import date, datetime

import pytest
from openpyxl import load_workbook

from tests.conftest import ADMIN_PASSWORD
from tests.meetingkit import actor, add_members, held, light_city
from wxbackend.clock import SHANGHAI
from wxbackend.errors import Forbidden
from wxbackend.services.meetings import comments, compliance, ledger

MARCH = "2026-03"


@pytest.fixture
async def book(ctx):
    """Branch A1 in March: an assembly and a theme day (one each with minutes and a draft)."""
    city = await light_city(ctx)
    people = await add_members(ctx, city.branch_a1, 5)
    assembly = await held(ctx, city.branch_a1, "branch_assembly", date(2026, 3, 5), people,
                          present=people[:3], online=people[3:4], title="一季度支部党员大会",
                          minutes={"text": "审议发展对象。", "recorded_by": "书记", "amendments": []})
    theme = await held(ctx, city.branch_a1, "theme_day", date(2026, 3, 20), people, present=people[:2],
                       excused=people[2:3], leave={str(people[2]["_id"]): {"reason": "出差", "status": "approved"}})
    await held(ctx, city.branch_a1, "lecture", date(2026, 3, 25), people, status="draft")
    for meeting in (assembly, theme):
        await compliance.meeting_finished(ctx, meeting)
    return city, people, assembly, theme


async def test_a_month_lists_the_meetings_held_with_their_counts(ctx, book):
    city, _, assembly, theme = book
    month = await ledger.month(ctx, actor(city, "east"), city.org("branch_a1"), MARCH)
    assert [m["_id"] for m in month.meetings] == [assembly["_id"], theme["_id"]]  # no draft
    assert [ledger.absent(m) for m in month.meetings] == [1, 2]
    assert month.status.missing == ["lecture"] and month.status.meetings == 2


async def test_an_entry_lists_everybody_expected_with_their_mark(ctx, book):
    city, _, _, theme = book
    entry = await ledger.entry(ctx, actor(city, "auditor_a"), theme["_id"])
    assert [(r.name, r.status) for r in entry.rows] == [
        ("党员1", "present"), ("党员2", "present"), ("党员3", "excused"), ("党员4", "absent"), ("党员5", "absent")]
    assert entry.rows[2].reason == "出差"
    with pytest.raises(Forbidden):
        await ledger.entry(ctx, actor(city, "west"), theme["_id"])


async def test_a_members_year_counts_each_kind_of_attendance(ctx, book):
    city, people, _, _ = book
    year = await ledger.member_year(ctx, actor(city, "sec_a1"), people[2]["_id"], 2026)
    assert [s for _, s in year.rows] == ["excused", "present"]
    assert year.rate == 1.0
    absentee = await ledger.member_year(ctx, actor(city, "sec_a1"), people[4]["_id"], 2026)
    assert [s for _, s in absentee.rows] == ["absent", "absent"] and absentee.rate == 0


async def test_the_excel_export_has_meetings_attendance_and_minutes(ctx, book):
    city, _, _, _ = book
    name, data = await ledger.export_xlsx(ctx, actor(city, "east"), city.org("branch_a1"), MARCH)
    assert name == f"A1-{MARCH}-工作台账.xlsx"
    workbook = load_workbook(io.BytesIO(data))
    assert workbook.sheetnames == ["会议台账", "出勤明细", "会议记录"]
    rows = list(workbook["会议台账"].iter_rows(values_only=True))
    assert rows[1][2:4] == ("支部党员大会", "一季度支部党员大会") and rows[1][7:13] == (5, 3, 1, 0, 1, "80%")
    assert rows[2][2] == "主题党日" and rows[2][7:13] == (5, 2, 0, 1, 2, "50%")
    detail = list(workbook["出勤明细"].iter_rows(values_only=True))[1:]
    assert len(detail) == 10 and sum(1 for r in detail if r[3] == "缺席") == 3
    assert [r[4] for r in workbook["会议记录"].iter_rows(values_only=True)][1] == "审议发展对象。"
    with pytest.raises(Forbidden):
        await ledger.export_xlsx(ctx, actor(city, "west"), city.org("branch_a1"), MARCH)


async def test_the_pages_over_http(ctx, city, web):
    """Committee and branch pages, the export and moderation, as secretaries use them."""
    # An ordinary month: in a quarter's last month the quarterly types are due too
    # (tests/test_calendar.py walks the months that differ).
    ctx.clock.set(datetime(2027, 5, 14, 10, tzinfo=SHANGHAI))
    people = await add_members(ctx, city.branch_a1, 3)
    this_month = ctx.clock.month()
    day = date.fromisoformat(this_month + "-01")
    meeting = await held(ctx, city.branch_a1, "theme_day", day, people, present=people[:2], title="主题党日活动")
    await compliance.meeting_finished(ctx, meeting)
    post = await comments.post(ctx, people[0], meeting["_id"], "不相关的广告")
    await web.login("east", ADMIN_PASSWORD)
    district = await web.get(f"/admin/orgs/{city.org('district_a')}")
    assert district.status_code == 200 and "三会一课落实情况" in district.text
    page = await web.get(f"/admin/orgs/{city.org('district_a')}/compliance?month={this_month}")
    assert '<dd id="compliant">1</dd>' in page.text and '<dd id="non-compliant">1</dd>' in page.text
    assert "东区第二党支部" in page.text.split('id="failing"')[1].split("</table>")[0]
    branch = await web.get(f"/admin/orgs/{city.org('branch_a1')}")
    assert "已达标" in branch.text and "主题党日 " not in branch.text.split("未开展")[1][:30]
    ledger_page = await web.get(f"/admin/orgs/{city.org('branch_a1')}/ledger?month={this_month}")
    assert "主题党日活动" in ledger_page.text and "导出Excel" in ledger_page.text
    export = await web.get(f"/admin/orgs/{city.org('branch_a1')}/ledger/{this_month}.xlsx")
    assert export.status_code == 200 and export.content[:2] == b"PK"
    entry = await web.get(f"/admin/meetings/{meeting['_id']}/ledger")
    assert "不相关的广告" in entry.text and "缺席" in entry.text
    hide = await web.post_form(f"/admin/comments/{post['_id']}/hide", {"reason": "广告"})
    assert hide.status_code == 302
    assert "已隐藏：广告" in (await web.get(f"/admin/meetings/{meeting['_id']}/ledger")).text
    bad = await web.get(f"/admin/orgs/{city.org('district_a')}/compliance?month=2026-13")
    assert bad.status_code == 400
    await web.login("west", ADMIN_PASSWORD)
    for url in (f"/admin/orgs/{city.org('branch_a1')}/ledger", f"/admin/meetings/{meeting['_id']}/ledger",
                f"/admin/orgs/{city.org('branch_a1')}/ledger/{this_month}.xlsx"):
        assert (await web.get(url)).status_code == 403, url
