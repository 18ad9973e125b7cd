"""A branch secretary's meeting day, in the browser: plan with the member picker,
publish, decide a leave request, project the rotating code, follow the board,
check a member in, finish and confirm the minutes."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from playwright.async_api import expect

from tests.browser.conftest import login
from tests.meetingkit import add_members
from wxbackend.clock import SHANGHAI
from wxbackend.services import meetings


async def test_a_secretary_runs_a_meeting_from_plan_to_minutes(page, ctx, city, clock):
    people = await add_members(ctx, city.branch_a1, 5)
    start = (clock.now() + timedelta(hours=2)).astimezone(SHANGHAI).replace(second=0, microsecond=0)
    end = start + timedelta(minutes=90)

    await login(page, "sec_a1")
    await page.goto(f"/admin/orgs/{city.org('branch_a1')}")
    await page.get_by_role("link", name="组织生活（三会一课）会议").click()
    await page.get_by_role("link", name="计划新会议").click()

    await page.locator("#f-type").select_option(label="支部党员大会")
    # No 支委会 for a branch without a committee; boxes wide enough for a whole title.
    await expect(page.locator("#f-type option", has_text="支委会")).to_have_count(0)
    for box in ("#f-title", "#f-topic", "#f-place"):
        assert (await page.locator(box).bounding_box())["width"] >= 400, box
    await page.locator("#f-title").fill("十二月支部党员大会：学习贯彻全会精神")
    await page.locator("#f-topic").fill("学习贯彻全会精神，研究支部明年工作")
    await page.locator("#f-place").fill("社区党群服务中心二楼会议室")
    await page.locator("#f-start").fill(start.strftime("%Y-%m-%dT%H:%M"))
    await page.locator("#f-end").fill(end.strftime("%Y-%m-%dT%H:%M"))
    # The picker lists the branch by name; ticking someone selects 指定党员.
    for person in people[:3]:
        await page.get_by_label(person["name"], exact=True).check()
    await expect(page.locator("#f-audience-list")).to_be_checked()
    await page.locator("#f-save").click()

    await expect(page.locator("h1")).to_contain_text("十二月支部党员大会")
    await page.get_by_role("button", name="发布并通知参会党员").click()
    await expect(page.get_by_role("button", name="发布并通知参会党员")).to_have_count(0)
    meeting_url = urlsplit(page.url).path
    meeting_id = meeting_url.rsplit("/", 1)[-1]

    # 党员3 asks for leave on the phone; the secretary approves it on the page.
    await meetings.request_leave(ctx, people[2], meeting_id, "出差在外地")
    await page.reload()
    await page.get_by_role("button", name="批准", exact=True).click()
    await expect(page.get_by_role("cell", name="已批准", exact=False)).to_be_visible()

    clock.advance(timedelta(hours=2, minutes=1))      # the meeting has begun
    screen = await page.context.new_page()
    await screen.goto(f"/admin/meetings/{meeting_id}/screen")
    assert (await screen.locator("#code").get_attribute("src")).startswith("data:image/")
    await expect(screen.locator("#present")).to_have_text("0")

    await page.goto(meeting_url)
    await page.locator("select[name=member_id]").select_option(label=people[0]["name"])
    await page.get_by_role("button", name="代为签到").click()
    # The projected page counts the arrival without a reload.
    await expect(screen.locator("#present")).to_have_text("1", timeout=12_000)
    await screen.close()

    await page.goto(f"/admin/meetings/{meeting_id}/board")
    await expect(page.locator("#present")).to_have_text("1")
    await expect(page.locator("#excused")).to_have_text("1")
    await expect(page.locator("#arrived")).to_contain_text(people[0]["name"])
    await expect(page.locator("#missing")).to_contain_text(people[1]["name"])

    await page.goto(meeting_url)
    await page.get_by_role("button", name="结束会议").click()
    await page.locator("textarea[name=text]").fill("会议学习了全会精神，讨论了支部明年工作要点。")
    await page.get_by_role("button", name="保存会议记录").click()
    await page.get_by_role("button", name="书记确认会议记录").click()
    await expect(page.locator("#minutes")).to_contain_text("支部明年工作要点")
    await expect(page.get_by_text("（只读）")).to_be_visible()
    await expect(page.get_by_role("button", name="保存会议记录")).to_have_count(0)
