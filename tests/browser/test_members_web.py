"""The member pages in the browser: search that pages, breadcrumbs that open,
the clear view after 查看完整信息 and what a reload then shows."""

from __future__ import annotations

import re

from playwright.async_api import expect

from tests.browser.conftest import login
from tests.conftest import SYSTEM
from tests.factories import member_fields
from wxbackend.services import orgs


async def test_a_name_search_pages_forward_and_back_keeping_the_query(page, ctx, city):
    for i in range(63):       # more than a page of 陈, spread over two branches
        branch = city.org("branch_a1") if i % 2 else city.org("branch_a2")
        await orgs.members.create(ctx, SYSTEM, branch, member_fields(f"陈{i:02d}号"))
    for i in range(5):
        await orgs.members.create(ctx, SYSTEM, city.org("branch_a1"), member_fields(f"林{i}"))

    await login(page, "city")
    await page.goto(f"/admin/orgs/{city.org('district_a')}")
    await page.get_by_role("link", name="查看全部党员").click()
    await page.get_by_placeholder(re.compile("姓名")).fill("陈")
    await page.get_by_role("button", name="搜索").click()

    await expect(page.locator("h1")).to_contain_text("搜索“陈”")
    first = await _names(page)
    assert len(first) == 50 and all(name.startswith("陈") for name in first)
    await expect(page.locator("#list-summary")).not_to_contain_text("共")
    await page.locator("#next-page").click()
    second = await _names(page)
    assert len(second) == 13 and all(name.startswith("陈") for name in second)
    assert not set(first) & set(second)
    assert sorted(first + second) == sorted(f"陈{i:02d}号" for i in range(63))
    await expect(page.locator("#next-page")).to_have_count(0)
    await page.locator("#prev-page").click()
    assert await _names(page) == first


async def test_the_plain_list_pages_back_too(page, ctx, city):
    for i in range(55):
        await orgs.members.create(ctx, SYSTEM, city.org("branch_b1"), member_fields(f"王{i:02d}"))
    await login(page, "city")
    await page.goto(f"/admin/orgs/{city.org('branch_b1')}/members")
    first = await _names(page)
    await page.locator("#next-page").click()
    assert len(await _names(page)) == 5
    await page.locator("#prev-page").click()
    assert await _names(page) == first


async def test_a_secretary_sees_only_crumbs_they_may_open(page, ctx, city):
    await login(page, "sec_a1")
    await page.goto(f"/admin/orgs/{city.org('branch_a1')}")
    crumbs = page.locator(".crumbs")
    await expect(crumbs).to_contain_text("东区区委")
    await expect(crumbs.get_by_role("link", name="东区区委")).to_have_count(0)
    await expect(crumbs.get_by_role("link", name="中共示范市委员会")).to_have_count(0)
    # The district admin's crumbs open the district.
    await page.context.clear_cookies()
    await login(page, "east")
    await page.goto(f"/admin/orgs/{city.org('branch_a1')}")
    await page.locator(".crumbs").get_by_role("link", name="东区区委").click()
    await expect(page.locator("h1")).to_contain_text("东区区委")


async def test_the_clear_view_is_shown_once_and_a_reload_masks_it_again(page, ctx, city):
    fields = member_fields("周全")
    member = await orgs.members.create(ctx, SYSTEM, city.org("branch_a1"), fields)
    await login(page, "east")
    await page.goto(f"/admin/members/{member['_id']}")
    await expect(page.locator("#id-card")).not_to_have_text(fields["id_card"])
    await page.get_by_role("button", name="查看完整信息").click()
    await expect(page.locator("#id-card")).to_have_text(fields["id_card"])
    assert "/unmask" not in page.url          # post/redirect/get: the address is the member's page
    await page.reload()                       # no re-submission, no 405, and masked again
    await expect(page.locator("#id-card")).not_to_have_text(fields["id_card"])
    await expect(page.get_by_text("完整信息只显示一次")).to_be_visible()
    entries = await ctx.db["audit_log"].find({"target.id": member["_id"]}).sort("_id", -1).to_list()
    assert [e["action"] for e in entries].count("member.unmask") == 1


async def _names(page) -> list[str]:
    return [name.strip() for name in await page.locator("td:first-child > a[href^='/admin/members/']").all_inner_texts()]
