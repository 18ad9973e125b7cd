"""Member import from .xlsx/.csv: all or nothing, row-by-row report, re-import updates.

Every bad file asserts the report (row, column, reason) *and* that nothing
changed: members per branch, the organisations' maintained counters and the
audit log are compared before and after.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import zipfile
from datetime import date, datetime
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from bson import ObjectId

from models import members as members_model
from models import orgs as orgs_model
from tests.conftest import ADMIN_PASSWORD, SYSTEM, actor_of
from tests.factories import member_fields
from tests.notifykit import drain
from wxbackend import jobs
from wxbackend.errors import Conflict
from wxbackend.services.orgs import importer, members
from wxbackend.services.orgs.import_sheet import (
    COLUMNS,
    MAX_BYTES,
    MAX_ROWS,
    MAX_SCANNED_ROWS,
    MAX_UNZIPPED_BYTES,
    NUMERIC_ID_CARD,
)
from wxbackend.settings import ROOT

HEADER = list(COLUMNS.values())
FIELDS = list(COLUMNS)
BRANCHES = ("branch_a1", "branch_a2", "branch_b1")
ORGS = ("root", "district_a", "district_b", *BRANCHES)


# -- building files ---------------------------------------------------------------

def people(n: int, **overrides: Any) -> list[dict[str, Any]]:
    """``n`` valid members as a secretary writes them (Chinese labels)."""
    rows = [member_fields(f"党员{i}", birth=date(1950 + i % 40, 1 + i % 12, 1 + i % 28)) for i in range(n)]
    for row in rows:
        row.update(overrides)
    return rows


def table(rows: list[dict[str, Any]], header: list[str] | None = None) -> list[list[Any]]:
    header = header or HEADER
    codes = [dict(zip(COLUMNS.values(), COLUMNS, strict=True)).get(h, h) for h in header]
    return [header, *[[row.get(code, "") for code in codes] for row in rows]]


def xlsx(rows: list[list[Any]]) -> bytes:
    book = openpyxl.Workbook()
    for row in rows:
        book.active.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def csv_bytes(rows: list[list[Any]], encoding: str = "utf-8") -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue().encode(encoding)


async def run(ctx, city, data: bytes, name: str = "名册.xlsx", user: str = "sec_a1",
              target: str = "branch_a1") -> importer.ImportResult:
    return await importer.import_file(ctx, actor_of(city, user), data, name,
                                      target_org_id=city.org(target))


# -- observing the database -------------------------------------------------------

async def state(ctx, city) -> dict[str, Any]:
    """What an import may change: members per branch, counters, import audit entries."""
    counts = {b: await active_in(ctx, city.org(b)) for b in BRANCHES}
    counters = {}
    for name in ORGS:
        org = await orgs_model.get(ctx.db, city.org(name))
        counters[name] = (org["member_count"], org["full_member_count"], org["subtree_member_count"])
    audits = sum([len(await import_audits(ctx, city.org(name))) for name in ORGS])
    return {"members": counts, "counters": counters, "audits": audits}


# SecantusDB's explain reports COLLSCAN for any field beyond the index (it runs on
# the index all the same), so these filter on the indexed field only.
async def active_in(ctx, org_id) -> int:
    found = await ctx.db.members.find({"org_id": org_id}, {"state": 1}).to_list()
    return sum(1 for m in found if m["state"] == "active")


async def import_audits(ctx, org_id) -> list[dict[str, Any]]:
    found = await ctx.db.audit_log.find({"org_id": org_id}).to_list()
    return [e for e in found if e["action"] == "member.import"]


async def counters(ctx, city, name: str) -> tuple[int, int, int]:
    return (await state(ctx, city))["counters"][name]


def issues(result: importer.ImportResult) -> list[tuple[int | None, str, str]]:
    return [(e.row, e.column, e.message) for e in result.errors]


@pytest.fixture
async def seeded(ctx, city):
    """One member already in branch A1, so that "nothing changed" is not trivially true."""
    await members.create(ctx, SYSTEM, city.org("branch_a1"), member_fields("在册党员"))
    return await state(ctx, city)


async def assert_refused(ctx, city, before, result) -> None:
    assert not result.ok
    assert result.created == result.updated == 0
    assert await state(ctx, city) == before


# -- happy paths ------------------------------------------------------------------

async def test_xlsx_import_creates_members_counters_and_one_audit_entry(ctx, city):
    rows = people(3)
    rows[2].update(party_status="预备党员", full_on="", joined_on="2025-07-01")
    result = await run(ctx, city, xlsx(table(rows)))
    assert result.ok, result.summary()
    assert (result.rows, result.created, result.updated) == (3, 3, 0)
    assert "新增3人" in result.summary()
    assert await counters(ctx, city, "branch_a1") == (3, 2, 3)
    assert await counters(ctx, city, "district_a") == (0, 0, 3)
    assert await counters(ctx, city, "root") == (0, 0, 3)
    stored = await members_model.by_id_card(ctx.db, ctx.cipher.blind_index(rows[0]["id_card"], "id_card"))
    assert stored["name"] == "党员0" and stored["party_status"] == "full"
    assert ctx.cipher.decrypt(stored["phone_enc"], purpose="phone") == rows[0]["phone"]
    entries = await import_audits(ctx, city.org("branch_a1"))
    assert len(entries) == 1
    assert entries[0]["target"]["type"] == "org"
    assert entries[0]["details"]["created"] == 3 and entries[0]["details"]["updated"] == 0


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030"])
async def test_csv_import_in_each_encoding_excel_writes(ctx, city, encoding):
    rows = people(2, ethnicity="维吾尔族")
    result = await run(ctx, city, csv_bytes(table(rows), encoding), "名册.csv")
    assert result.ok, result.summary()
    assert result.created == 2
    stored = await members_model.by_id_card(ctx.db, ctx.cipher.blind_index(rows[1]["id_card"], "id_card"))
    assert stored["name"] == "党员1" and stored["ethnicity"] == "维吾尔族"


async def test_reimport_updates_instead_of_duplicating(ctx, city):
    rows = people(3)
    rows[2].update(party_status="预备党员", full_on="", joined_on="2025-07-01")
    assert (await run(ctx, city, xlsx(table(rows)))).ok
    assert await counters(ctx, city, "branch_a1") == (3, 2, 3)
    rows[0]["phone"] = "13700000001"
    rows[2].update(party_status="正式党员", full_on="2026-07-01")
    again = await run(ctx, city, xlsx(table(rows)))
    assert again.ok, again.summary()
    assert (again.created, again.updated, again.unchanged) == (0, 2, 1)
    assert await counters(ctx, city, "branch_a1") == (3, 3, 3)
    assert await counters(ctx, city, "district_a") == (0, 0, 3)
    assert await active_in(ctx, city.org("branch_a1")) == 3
    found = await members_model.by_phone(ctx.db, ctx.cipher.blind_index("13700000001", "phone"))
    assert [m["name"] for m in found] == ["党员0"]
    third = await members_model.by_id_card(ctx.db, ctx.cipher.blind_index(rows[2]["id_card"], "id_card"))
    assert third["party_status"] == "full"
    same = await run(ctx, city, xlsx(table(rows)))
    assert (same.created, same.updated, same.unchanged) == (0, 0, 3)
    assert "3人信息无变化" in same.summary()
    assert await counters(ctx, city, "branch_a1") == (3, 3, 3)


async def test_reimport_with_org_codes_moves_members_and_both_sides_count(ctx, city):
    rows = people(3, org_code="A1")
    assert (await run(ctx, city, xlsx(table(rows)), user="east", target="district_a")).ok
    rows[0]["org_code"] = "A2"
    rows[0].update(party_status="预备党员", full_on="", joined_on="2025-07-01")
    result = await run(ctx, city, xlsx(table(rows)), user="east", target="district_a")
    assert result.ok, result.summary()
    assert await counters(ctx, city, "branch_a1") == (2, 2, 2)
    assert await counters(ctx, city, "branch_a2") == (1, 0, 1)
    assert await counters(ctx, city, "district_a") == (0, 0, 3)
    assert await counters(ctx, city, "root") == (0, 0, 3)
    moved = await members_model.by_id_card(ctx.db, ctx.cipher.blind_index(rows[0]["id_card"], "id_card"))
    assert moved["org_id"] == city.org("branch_a2")
    assert moved["org_ancestors"] == [city.org("root"), city.org("district_a"), city.org("branch_a2")]
    a1_audit = await import_audits(ctx, city.org("branch_a1"))
    assert a1_audit[-1]["details"]["moved_out"] == 1


def table_with(rows: list[dict[str, Any]], org_codes: bool) -> list[list[Any]]:
    return table(rows, HEADER if org_codes else HEADER[:-1])


async def test_title_row_aliases_blank_rows_and_date_cells(ctx, city):
    """A secretary's own sheet: a title above the header, other header names, Excel dates."""
    rows = people(2)
    header = ["序号", "姓 名", "身份证号", "联系电话", "党员状态", "入党时间", "转正日期", "人员类别", "备注"]
    body = [[i + 1, r["name"], r["id_card"], r["phone"], r["party_status"],
             datetime(2010, 7, 1), datetime(2011, 7, 1), r["category"], ""] for i, r in enumerate(rows)]
    body[1][5] = "2010-13-01"
    sheet = [["东区第一党支部党员名册"], header, body[0], [None] * 9, body[1]]
    result = await run(ctx, city, xlsx(sheet))
    assert issues(result) == [(5, "入党时间", "日期格式应为 YYYY-MM-DD")]
    body[1][5] = datetime(2010, 7, 1)
    result = await run(ctx, city, xlsx(sheet))
    assert result.ok, result.summary()
    stored = await members_model.by_id_card(ctx.db, ctx.cipher.blind_index(rows[1]["id_card"], "id_card"))
    assert stored["joined_on"] == "2010-07-01" and stored["full_on"] == "2011-07-01"


async def test_filled_in_template_imports(ctx, city):
    book = openpyxl.load_workbook(ROOT / "templates" / "member-import-template.xlsx")
    assert book.sheetnames == ["党员信息", "填写说明"]
    for row in table(people(2))[1:]:
        book["党员信息"].append(row)
    out = io.BytesIO()
    book.save(out)
    result = await run(ctx, city, out.getvalue(), "模板.xlsx")
    assert result.ok, result.summary()
    assert result.created == 2


# -- refused files: report and nothing changed ------------------------------------

async def test_wrong_check_digit_is_reported_and_nothing_changes(ctx, city, seeded):
    rows = people(3)
    card = rows[1]["id_card"]
    rows[1]["id_card"] = card[:17] + ("0" if card[17] != "0" else "1")
    result = await run(ctx, city, xlsx(table(rows)))
    assert issues(result) == [(3, "身份证号码", "身份证号码校验位错误")]
    assert "未做任何修改" in result.summary() and "第3行 身份证号码" in result.summary()
    await assert_refused(ctx, city, seeded, result)


async def test_bad_dates_are_reported_row_by_row(ctx, city, seeded):
    rows = people(4)
    rows[0]["joined_on"] = "2010-02-30"
    rows[2]["full_on"] = "2009-01-01"
    rows[3]["birth_date"] = "1960-01-01"
    result = await run(ctx, city, csv_bytes(table(rows)), "名册.csv")
    assert issues(result) == [
        (2, "入党日期", "日期格式应为 YYYY-MM-DD"),
        (4, "转正日期", "转正日期不能早于入党日期"),
        (5, "出生日期", "出生日期与身份证号码不一致"),
    ]
    await assert_refused(ctx, city, seeded, result)


async def test_missing_required_column(ctx, city, seeded):
    header = [h for h in HEADER if h != "入党日期"]
    result = await run(ctx, city, xlsx(table(people(2), header)))
    assert [(e.row, e.code) for e in result.errors] == [(None, "import_headers")]
    assert "缺少必填列：入党日期" in result.errors[0].message
    await assert_refused(ctx, city, seeded, result)


def zipped(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return out.getvalue()


def far_away_cell() -> bytes:
    book = openpyxl.Workbook()
    for row in table(people(1)):
        book.active.append(row)
    book.active.cell(row=MAX_SCANNED_ROWS + 5, column=1, value="x")
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


# (file name, contents built on use, expected code): built lazily, some are large.
MALFORMED = [
    ("名册.xlsx", lambda: zipped({"[Content_Types].xml": b"<not xml"}), "import_unreadable"),
    ("名册.xlsx", lambda: zipped({"xl/big.bin": bytes(MAX_UNZIPPED_BYTES + 1)}), "import_too_large"),
    ("名册.xlsx", lambda: far_away_cell(), "import_too_many_rows"),
    ("名册.xlsx", lambda: os.urandom(4096), "import_unreadable"),
    ("名册.xlsx", lambda: b"PK\x03\x04" + os.urandom(2000), "import_unreadable"),
    ("名册.xlsx", lambda: b"", "import_empty"),
    ("名册.csv", lambda: b"", "import_empty"),
    ("名册.csv", lambda: b"\n\n,,\n", "import_empty"),
    ("名册.csv", lambda: csv_bytes([HEADER]), "import_no_rows"),
    ("名册.xlsx", lambda: xlsx([HEADER, [None] * len(HEADER)]), "import_no_rows"),
    ("名册.xls", lambda: b"\xd0\xcf\x11\xe0" + bytes(100), "import_file_type"),
    ("名册.txt", lambda: b"hello", "import_file_type"),
    ("名册.csv", lambda: b"x" * (MAX_BYTES + 1), "import_too_large"),
    ("名册.csv", lambda: b"\xff\xfe\x00\x00\x81\x30", "import_unreadable"),
]


async def test_malformed_files_are_refused_with_a_clear_message(ctx, city, seeded):
    # One test over all cases: each case's check is cheap, the city fixture is not.
    for name, build, code in MALFORMED:
        data = build()
        result = await run(ctx, city, data, name)
        assert [(e.row, e.code) for e in result.errors] == [(None, code)], (name, data[:20])
        assert result.errors[0].message  # Chinese, for the secretary
        assert result.summary().startswith("导入失败")
        await assert_refused(ctx, city, seeded, result)


async def test_more_than_max_rows_is_refused(ctx, city, seeded):
    row = table(people(1))[1]
    data = csv_bytes([HEADER, *([row] * (MAX_ROWS + 1))])
    result = await run(ctx, city, data, "名册.csv")
    assert [e.code for e in result.errors] == ["import_too_many_rows"]
    await assert_refused(ctx, city, seeded, result)


async def test_duplicates_within_the_file_name_both_rows(ctx, city, seeded):
    rows = people(4)
    rows[3].update(id_card=rows[1]["id_card"], birth_date=rows[1]["birth_date"])
    result = await run(ctx, city, xlsx(table(rows)))
    assert issues(result) == [(3, "身份证号码", "身份证号码与第5行重复"),
                              (5, "身份证号码", "身份证号码与第3行重复")]
    await assert_refused(ctx, city, seeded, result)


async def test_id_card_saved_as_number_asks_for_text_format(ctx, city, seeded):
    rows = table(people(2))
    rows[2][HEADER.index("身份证号码")] = float(rows[2][HEADER.index("身份证号码")][:17])
    result = await run(ctx, city, xlsx(rows))
    assert issues(result) == [(3, "身份证号码", NUMERIC_ID_CARD)]
    csv_rows = table(people(1))
    csv_rows[1][HEADER.index("身份证号码")] = "3.50203E+17"
    result = await run(ctx, city, csv_bytes(csv_rows), "名册.csv")
    assert issues(result) == [(2, "身份证号码", NUMERIC_ID_CARD)]
    await assert_refused(ctx, city, seeded, result)


async def test_org_codes_outside_scope_or_unknown_are_rejected(ctx, city, seeded):
    rows = people(4, org_code="A1")
    rows[1]["org_code"] = "A2"  # the other branch of the same district
    rows[2]["org_code"] = "ZZ9"
    rows[3]["org_code"] = "DA"  # a committee cannot hold members
    result = await run(ctx, city, xlsx(table(rows)), user="sec_a1")
    assert issues(result) == [(3, "党组织编码", "无权向该党组织导入党员"),
                              (4, "党组织编码", "找不到党组织编码“ZZ9”"),
                              (5, "党组织编码", "无权向该党组织导入党员")]
    await assert_refused(ctx, city, seeded, result)
    result = await run(ctx, city, xlsx(table(rows)), user="east", target="district_a")
    assert issues(result) == [(4, "党组织编码", "找不到党组织编码“ZZ9”"),
                              (5, "党组织编码", "党员应编入党支部")]
    await assert_refused(ctx, city, seeded, result)


async def test_member_registered_in_another_district_is_reported_without_saying_where(ctx, city, seeded):
    elsewhere = member_fields("西区党员")
    await members.create(ctx, actor_of(city, "west"), city.org("branch_b1"), elsewhere)
    before = await state(ctx, city)
    rows = people(2)
    rows[1]["id_card"] = elsewhere["id_card"]
    rows[1]["birth_date"] = elsewhere["birth_date"]
    result = await run(ctx, city, xlsx(table(rows)))
    assert [(e.row, e.column, e.code) for e in result.errors] == [(3, "身份证号码", "member_out_of_scope")]
    text = result.summary()
    assert "其他党组织" in text
    for secret in ("西区", "B1", "DB", "西区党员", str(city.org("branch_b1"))):
        assert secret not in text
    await assert_refused(ctx, city, before, result)


async def test_member_not_active_is_not_revived_by_import(ctx, city, seeded):
    gone = member_fields("已故党员")
    member = await members.create(ctx, SYSTEM, city.org("branch_a1"), gone)
    await members.set_state(ctx, SYSTEM, member["_id"], "deceased")
    before = await state(ctx, city)
    result = await run(ctx, city, xlsx(table([gone])))
    assert [(e.row, e.code) for e in result.errors] == [(2, "member_not_active")]
    await assert_refused(ctx, city, before, result)


async def test_rows_without_org_code_need_a_branch(ctx, city, seeded):
    result = await run(ctx, city, xlsx(table_with(people(2), org_codes=False)),
                       user="east", target="district_a")
    assert [(e.row, e.code) for e in result.errors] == [(None, "org_code_missing")]
    assert "东区区委" in result.errors[0].message
    await assert_refused(ctx, city, seeded, result)


async def test_a_member_registered_between_check_and_write_rolls_the_whole_import_back(ctx, city, seeded):
    """Only a race can fail a checked write: here a number registered after the checks, in
    the second of three chunks. What the first chunk inserted and updated is undone."""
    ctx.settings.members.import_chunk_rows = 2
    registered = member_fields("老党员")
    known = await members_model.get(ctx.db, (await members.create(ctx, SYSTEM, city.org("branch_a1"),
                                                                  registered))["_id"])
    rows = [dict(registered, phone="13700000009"), *people(4)]  # an update, then four inserts
    run = await importer.start_upload(ctx, actor_of(city, "sec_a1"), xlsx(table(rows)), "名册.xlsx",
                                      target_org_id=city.org("branch_a1"))
    ctx.state(jobs.WorkerState).stopping = True  # checked and staged, then handed back
    await drain(ctx, horizon=0.5)
    assert (await run_state(ctx, city, run))["phase"] == "writing"
    await members.create(ctx, SYSTEM, city.org("branch_a2"), rows[3])  # the race
    before = await state(ctx, city)
    ctx.state(jobs.WorkerState).stopping = False
    await drain(ctx, horizon=2)
    view = await run_state(ctx, city, run)
    assert view["state"] == "failed"
    result = (await importer.run_view(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), run["_id"])).result
    assert [(e.row, e.column, e.code) for e in result.errors] == [(5, "身份证号码", "registered_meanwhile")]
    assert "撤销" in result.errors[0].message and result.summary().startswith("导入失败，未做任何修改")
    assert await state(ctx, city) == before
    again = await members_model.get(ctx.db, known["_id"])
    assert again["phone_bidx"] == known["phone_bidx"] and again["updated_at"] == known["updated_at"]
    assert await ctx.db.import_chunks.count_documents({"run_id": run["_id"]}) == 0


async def run_state(ctx, city, run) -> dict[str, Any]:
    view = await importer.run_view(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), run["_id"])
    return {"state": view.state, "phase": view.phase}


async def test_a_second_import_into_the_same_branch_is_refused_until_the_first_is_done(ctx, city, seeded):
    data = xlsx(table(people(3)))
    sec = actor_of(city, "sec_a1")
    first = await importer.start_upload(ctx, sec, data, "一.xlsx", target_org_id=city.org("branch_a1"))
    for attempt in (importer.start_upload(ctx, sec, data, "二.xlsx", target_org_id=city.org("branch_a1")),
                    importer.import_file(ctx, SYSTEM, data, "三.xlsx", target_org_id=city.org("branch_a1"))):
        with pytest.raises(Conflict) as caught:
            await attempt
        assert caught.value.code == "import_running"
        assert caught.value.message.startswith("该组织正在导入党员（文件“一.xlsx”")
        assert caught.value.message.endswith("请等待上一次导入完成后再试")
    other = await importer.start_upload(ctx, actor_of(city, "east"), xlsx(table(people(1, name="二支部"))),
                                        "a2.xlsx", target_org_id=city.org("branch_a2"))
    assert await ctx.db.import_runs.count_documents({"active": {"$exists": True}}) == 2
    await drain(ctx)
    assert (await run_state(ctx, city, first))["state"] == "done"
    assert (await importer.run_view(ctx, sec, city.org("branch_a1"), first["_id"])).result.created == 3
    assert (await importer.run_view(ctx, actor_of(city, "east"), city.org("branch_a2"),
                                    other["_id"])).result.ok
    assert (await run(ctx, city, data)).unchanged == 3  # free again


# -- the command line entry point -------------------------------------------------

async def test_import_path_uses_default_org_code(ctx, city, tmp_path):
    path = tmp_path / "名册.csv"
    path.write_bytes(csv_bytes(table_with(people(2), org_codes=False), "gb18030"))
    without = await importer.import_path(ctx, SYSTEM, path)
    assert [e.code for e in without.errors] == ["org_code_missing"]
    result = await importer.import_path(ctx, SYSTEM, path, default_org_code="A2")
    assert result.ok, result.summary()
    assert await counters(ctx, city, "branch_a2") == (2, 2, 2)
    missing = await importer.import_path(ctx, SYSTEM, tmp_path / "nope.xlsx", default_org_code="A2")
    assert [e.code for e in missing.errors] == ["import_unreadable"]


async def test_cli_command_exit_codes(ctx, city, servers, tmp_path):
    good = tmp_path / "good.csv"
    good.write_bytes(csv_bytes(table_with(people(2), org_codes=False)))
    bad = tmp_path / "bad.csv"
    bad.write_bytes(csv_bytes(table_with(people(1, joined_on="昨天"), org_codes=False)))
    env = {**os.environ, "WXB_MONGODB_URI": servers.mongodb_uri, "WXB_REDIS_URL": servers.redis_url,
           "WXB_MONGODB_DATABASE": ctx.db.name, "WXB_DATA_DIR": str(tmp_path),
           "WXB_SECURITY_SECRET_KEY": ctx.settings.security.secret_key,
           "WXB_SECURITY_FIELD_KEY": ctx.settings.security.field_key, "WXB_LOG_FORMAT": "text"}

    def cli(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "wxbackend", "import-members", str(path),
                               "--org-code", "A1"], env=env, capture_output=True, text=True,
                              timeout=120, cwd=ROOT)

    done = cli(good)
    assert done.returncode == 0, done.stderr
    assert "新增2人" in done.stdout
    refused = cli(bad)
    assert refused.returncode == 1
    assert "第2行 入党日期" in refused.stdout
    assert await counters(ctx, city, "branch_a1") == (2, 2, 2)


# -- the management web -----------------------------------------------------------

async def upload(web, url: str, name: str, data: bytes, *, xsrf: bool = True):
    fields = {"_xsrf": await web.xsrf()} if xsrf else {}
    return await web.request("POST", url, data=fields, files={"file": (name, data)})


async def test_web_upload_answers_at_once_then_shows_progress_and_the_result(ctx, city, web, seeded):
    await web.login("sec_a1", ADMIN_PASSWORD)
    url = f"/admin/orgs/{city.org('branch_a1')}/import"
    page = await web.get(url)
    assert page.status_code == 200 and 'type="file"' in page.text and "/admin/import-template.xlsx" in page.text
    assert 'id="import-status"' not in page.text
    rows = people(3)
    queued = await upload(web, url, "名册.xlsx", xlsx(table(rows)))
    assert queued.status_code == 303  # no worker has run: the answer did not wait for the import
    run_page = queued.headers["location"]
    assert run_page.startswith(url + "/")
    shown = await web.get(run_page)
    assert shown.status_code == 200
    assert 'id="import-status"' in shown.text and 'data-state="queued"' in shown.text
    assert 'id="import-progress"' in shown.text and "排队等待导入" in shown.text
    status = (await web.get(run_page + "/status")).json()
    assert (status["state"], status["phase"], status["percent"]) == ("queued", "queued", 0)
    busy = await upload(web, url, "又一份.xlsx", xlsx(table(people(1))))
    assert busy.status_code == 409
    assert 'id="import-busy"' in busy.text and "该组织正在导入党员" in busy.text
    assert 'data-state="queued"' in busy.text  # the import under way is shown with the form
    await drain(ctx)
    done = await web.get(run_page)
    assert 'data-state="done"' in done.text and 'id="import-ok"' in done.text
    assert 'id="created">3<' in done.text and 'id="member-count">4<' in done.text
    assert (await web.get(run_page + "/status")).json()["state"] == "done"
    assert await counters(ctx, city, "branch_a1") == (4, 4, 4)
    assert 'id="import-runs"' in (await web.get(url)).text


async def test_web_shows_the_error_table_of_a_refused_file(ctx, city, web, seeded):
    await web.login("sec_a1", ADMIN_PASSWORD)
    url = f"/admin/orgs/{city.org('branch_a1')}/import"
    bad = people(3)
    bad[2]["phone"] = "1234"
    refused = await upload(web, url, "名册.xlsx", xlsx(table(bad)))
    assert refused.status_code == 303
    await drain(ctx)
    page = await web.get(refused.headers["location"])
    assert 'data-state="failed"' in page.text
    assert "没有做任何修改" in page.text and "<th>行号</th><th>列</th><th>原因</th>" in page.text
    assert "<td>4</td><td>手机号码</td><td>手机号码应为11位，以1开头</td>" in page.text
    assert await state(ctx, city) == seeded
    run_id = ObjectId(refused.headers["location"].rsplit("/", 1)[1])
    assert await ctx.db.import_files.count_documents({"run_id": run_id}) == 0  # deleted once finished


async def test_web_refuses_post_without_xsrf_and_other_branches(ctx, city, web, seeded):
    await web.login("sec_a1", ADMIN_PASSWORD)
    data = xlsx(table(people(2)))
    own = f"/admin/orgs/{city.org('branch_a1')}/import"
    assert (await upload(web, own, "名册.xlsx", data, xsrf=False)).status_code == 403
    other = f"/admin/orgs/{city.org('branch_a2')}/import"
    assert (await web.get(other)).status_code == 403
    assert (await upload(web, other, "名册.xlsx", data)).status_code == 403
    assert (await upload(web, own, "", b"")).status_code == 400
    assert await state(ctx, city) == seeded


async def test_auditor_cannot_import(ctx, city, web, seeded):
    await web.login("auditor_a", ADMIN_PASSWORD)
    url = f"/admin/orgs/{city.org('branch_a1')}/import"
    assert (await upload(web, url, "名册.xlsx", xlsx(table(people(1))))).status_code == 403
    assert await state(ctx, city) == seeded


async def test_template_download(ctx, city, web):
    assert (await web.get("/admin/import-template.xlsx")).status_code == 302  # login first
    await web.login("sec_a1", ADMIN_PASSWORD)
    response = await web.get("/admin/import-template.xlsx")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/vnd.openxmlformats")
    book = openpyxl.load_workbook(io.BytesIO(response.content))
    assert [c.value for c in book.worksheets[0][1]] == HEADER
    id_column = openpyxl.utils.get_column_letter(HEADER.index("身份证号码") + 1)
    assert book.worksheets[0].column_dimensions[id_column].number_format == "@"


def test_generated_template_is_up_to_date(tmp_path):
    """The committed xlsx matches what the generator writes now (headers and help)."""
    committed = openpyxl.load_workbook(ROOT / "templates" / "member-import-template.xlsx")
    out = tmp_path / "template.xlsx"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_import_template.py"), str(out)],
                   check=True, capture_output=True)
    fresh = openpyxl.load_workbook(out)
    for name in ("党员信息", "填写说明"):
        assert list(committed[name].values) == list(fresh[name].values)
