"""Spreadsheet formula injection: every workbook the platform writes keeps user text as text.

The review's attack: a member asks for leave with the reason
``=HYPERLINK("http://evil/","x")``; openpyxl wrote it as a formula into the
branch ledger the committee downloads. Each export below is fed hostile text
in every field a person can type, loaded back with openpyxl, and walked: no
cell is a formula, the text reads back with OWASP's ``'`` prefix, numbers stay
numbers. ``test_every_workbook_writer_is_walked_here`` fails when a new export
appears without being added to this file.
"""

from __future__ import annotations

import importlib.util
import io
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from openpyxl import load_workbook

from tests.conftest import ADMIN_PASSWORD, actor_of
from tests.meetingkit import actor, add_members, bearer, held, light_city, phone_member
from wxbackend import spreadsheet
from wxbackend.clock import SHANGHAI
from wxbackend.services import meetings
from wxbackend.services.meetings import ledger

ROOT = Path(__file__).resolve().parent.parent
LINK = '=HYPERLINK("http://evil/","x")'
# One of each start OWASP lists, plus the ones hidden behind blanks or typed full-width.
HOSTILE = [LINK, "+1+1", "-2+3", "@SUM(1,1)", "\t=1+1", "\r=1+1", " \n=1+1", "＝1+1",
           "=cmd|' /C calc'!A0"]
CONTROL = "出差\x01\x0b\x1f（带控制字符）"


def cells(data: bytes) -> list:
    book = load_workbook(io.BytesIO(data))
    return [cell for ws in book.worksheets for row in ws.iter_rows() for cell in row]


def assert_no_formula(data: bytes) -> list:
    found = cells(data)
    formulas = [(c.coordinate, c.value) for c in found if c.data_type == "f"]
    assert formulas == [], formulas
    return found


def assert_neutralised(found: list, texts: list[str]) -> None:
    values = {c.value for c in found if isinstance(c.value, str)}
    for text in texts:
        text = text.replace("\r", "\n")  # XML reads a carriage return back as a line feed
        assert "'" + text in values, text
        assert text not in values, text


# -- the ledger ------------------------------------------------------------------------

async def test_a_members_hostile_leave_reason_reaches_the_committee_as_text(ctx, city, web, server_url):
    """The attack as reported: sent through the mini-program, downloaded over HTTP."""
    ctx.clock.set(datetime(2027, 5, 14, 10, tzinfo=SHANGHAI))
    member, token = await phone_member(ctx, city.branch_a1, "请假党员")
    secretary = actor_of(city, "sec_a1")
    start = ctx.clock.now() + timedelta(days=1)
    draft = await meetings.create(ctx, secretary, city.org("branch_a1"),
                                  {"type": "theme_day", "title": "五月主题党日", "topic": "学习党章",
                                   "place": "党员活动室", "start": start, "end": start + timedelta(hours=2)})
    meeting = await meetings.publish(ctx, secretary, draft["_id"])
    async with httpx.AsyncClient(base_url=server_url, timeout=30) as api:
        asked = await api.post(f"/api/v1/meetings/{meeting['_id']}/leave", headers=bearer(token),
                               json={"reason": LINK})
    assert asked.status_code == 200, asked.text
    await meetings.decide_leave(ctx, secretary, meeting["_id"], member["_id"], True)
    await web.login("east", ADMIN_PASSWORD)
    export = await web.get(f"/admin/orgs/{city.org('branch_a1')}/ledger/2027-05.xlsx")
    assert export.status_code == 200
    found = assert_no_formula(export.content)
    reason = [c for c in found if c.value == "'" + LINK]
    assert len(reason) == 1 and reason[0].data_type == "s"
    assert "evil" not in str([c.hyperlink for c in found if c.hyperlink])
    book = load_workbook(io.BytesIO(export.content))
    assert book["会议台账"]["H2"].value == 1 and book["会议台账"]["H2"].data_type == "n"  # 应到


@pytest.fixture
async def hostile_month(ctx):
    """Branch A1's March: every typed field of two meetings hostile, one reason with control characters."""
    city = await light_city(ctx)
    people = await add_members(ctx, city.branch_a1, 3)
    first = await held(ctx, city.branch_a1, "branch_assembly", date(2026, 3, 5), people, present=people[:1],
                       excused=people[1:3], title=HOSTILE[0], topic=HOSTILE[1], place=HOSTILE[2],
                       minutes={"text": HOSTILE[3], "recorded_by": HOSTILE[4], "confirmed_by": HOSTILE[5],
                                "amendments": []},
                       materials=[{"name": HOSTILE[6], "file_id": None}],
                       leave={str(people[1]["_id"]): {"reason": HOSTILE[7], "status": "approved"},
                              str(people[2]["_id"]): {"reason": CONTROL, "status": "approved"}})
    second = await held(ctx, city.branch_a1, "theme_day", date(2026, 3, 20), people, present=people,
                        title=HOSTILE[8])
    return city, first, second


async def test_the_ledger_export_writes_every_typed_field_as_text(ctx, hostile_month):
    city, _, _ = hostile_month
    _, data = await ledger.export_xlsx(ctx, actor(city, "east"), city.org("branch_a1"), "2026-03")
    found = assert_no_formula(data)
    assert_neutralised(found, HOSTILE)
    # A control character XML cannot carry is dropped instead of failing the whole export.
    assert "出差（带控制字符）" in {c.value for c in found}
    book = load_workbook(io.BytesIO(data))
    counts = [c.value for c in book["会议台账"][2][7:12]]
    assert counts == [3, 1, 0, 2, 0] and {c.data_type for c in book["会议台账"][2][7:12]} == {"n"}


# -- the import template -----------------------------------------------------------------

def template_script():
    spec = importlib.util.spec_from_file_location("make_import_template",
                                                  ROOT / "scripts" / "make_import_template.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_import_template_has_no_formula_cells():
    script = template_script()
    assert_no_formula(spreadsheet.save(script.build()))
    assert_no_formula((ROOT / "templates" / "member-import-template.xlsx").read_bytes())


def test_the_import_templates_help_sheet_writes_its_text_as_text():
    script = template_script()
    book = spreadsheet.new_book()
    script.write_members_sheet(book)
    script.write_help_sheet(book, {code: HOSTILE[i % len(HOSTILE)] for i, code in enumerate(script.HELP)},
                            HOSTILE)
    assert_neutralised(assert_no_formula(spreadsheet.save(book)), HOSTILE)


# -- the helper ----------------------------------------------------------------------------

def test_numbers_dates_and_plain_text_keep_their_type():
    moment = datetime(2026, 3, 5, 7, 30, tzinfo=UTC)
    book = spreadsheet.new_book()
    spreadsheet.sheet(book, "类型", ["数", "负数", "小数", "金额", "日期", "时刻", "是否", "空", "文字", "连字符"],
                      [[12, -5, 3.5, Decimal("1.25"), date(2026, 3, 5), moment, True, None,
                        "出差 = 公务", "2026-03-05"]], [8] * 10, first=True)
    row = load_workbook(io.BytesIO(spreadsheet.save(book)))["类型"][2]
    assert [c.value for c in row[:4]] == [12, -5, 3.5, 1.25] and {c.data_type for c in row[:4]} == {"n"}
    assert row[4].value == datetime(2026, 3, 5) and row[4].is_date
    assert row[5].value == datetime(2026, 3, 5, 15, 30) and row[5].is_date  # shown in Shanghai
    assert row[6].value is True and row[7].value is None
    assert [row[8].value, row[9].value] == ["出差 = 公务", "2026-03-05"]  # no prefix where none is needed


def test_cell_text_prefixes_each_formula_start_and_bounds_the_length():
    for text in HOSTILE:
        assert spreadsheet.cell_text(text) == "'" + text
    assert spreadsheet.cell_text("正常事由") == "正常事由"
    assert len(spreadsheet.cell_text("=" + "x" * 40_000)) == spreadsheet.MAX_CELL_CHARS


def test_every_workbook_writer_is_walked_here():
    """Only spreadsheet.py makes a Workbook; the modules using it are the ones tested above."""
    makers, users = [], []
    for path in [*ROOT.glob("wxbackend/**/*.py"), *ROOT.glob("handlers/**/*.py"), *ROOT.glob("scripts/*.py")]:
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(ROOT).as_posix()
        if name != "wxbackend/spreadsheet.py" and re.search(r"\bWorkbook\(|import[^\n]*\bWorkbook\b", text):
            makers.append(name)
        if re.search(r"^from wxbackend import[^\n]*\bspreadsheet\b", text, re.M):
            users.append(name)
    assert makers == []
    assert sorted(users) == ["scripts/make_import_template.py", "wxbackend/services/meetings/ledger.py"]
