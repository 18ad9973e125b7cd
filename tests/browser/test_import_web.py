"""Importing members in the browser: a file with a bad row is refused with its
行号/列/原因 report and changes nothing; the corrected file goes through the job
queue while the page shows its progress, then the result."""

from __future__ import annotations

from playwright.async_api import expect

from models import orgs as orgs_model
from tests.browser.conftest import login
from tests.notifykit import drain
from tests.test_import import people, table, xlsx


async def test_a_secretary_fixes_a_bad_row_and_imports_the_file(page, ctx, city, tmp_path):
    rows = people(4)
    good = tmp_path / "支部名册.xlsx"
    good.write_bytes(xlsx(table(rows)))
    bad = tmp_path / "支部名册（有误）.xlsx"
    bad.write_bytes(xlsx(table([*rows[:2], {**rows[2], "id_card": "35020319900101001X"}, rows[3]])))

    await login(page, "sec_a1")
    await page.goto(f"/admin/orgs/{city.org('branch_a1')}")
    await page.get_by_role("link", name="从表格导入党员").click()
    await _upload_and_work(page, ctx, bad)
    await expect(page.locator("#import-status")).to_have_attribute("data-state", "failed")
    await expect(page.locator("#import-failed")).to_contain_text("没有做任何修改")
    report = page.locator("#import-errors tr")
    await expect(report.first).to_contain_text("行号")
    await expect(report.nth(1)).to_contain_text("4")            # the header is row 1
    await expect(report.nth(1)).to_contain_text("身份证")
    assert (await orgs_model.get(ctx.db, city.org("branch_a1")))["member_count"] == 0

    await page.goto(f"/admin/orgs/{city.org('branch_a1')}/import")
    await _upload_and_work(page, ctx, good)
    await expect(page.locator("#import-status")).to_have_attribute("data-state", "done")
    await expect(page.locator("#created")).to_have_text("4")
    assert (await orgs_model.get(ctx.db, city.org("branch_a1")))["member_count"] == 4


async def _upload_and_work(page, ctx, path) -> None:
    """Upload, see the run queued at once, then let a worker take it while the page polls."""
    await page.locator("input[type=file]").set_input_files(str(path))
    await page.get_by_role("button", name="导入").click()
    await expect(page.locator("#import-status")).to_be_visible()
    await drain(ctx)
    await expect(page.locator("#import-status")).not_to_have_attribute(
        "data-state", "queued", timeout=10_000)
    await page.wait_for_function(
        "['done', 'failed'].includes(document.querySelector('#import-status')?.dataset.state)",
        timeout=10_000)
