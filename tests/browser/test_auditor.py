"""The auditor's read-only view, in the browser: pages without actions, the audit
log in Chinese with names, and a change refused as read-only, not as out of scope."""

from __future__ import annotations

import re
from datetime import timedelta

from playwright.async_api import expect

from tests.browser.conftest import login
from tests.conftest import actor_of
from tests.factories import member_fields
from tests.meetingkit import add_members
from wxbackend.services import meetings, orgs

INTERNAL = re.compile(r"\b(?:meeting|member|org|notification|user)\.[a-z_]+\b|\bseed\b|channel:|fields:")


async def test_the_auditor_reads_everything_and_changes_nothing(page, ctx, city, clock):
    east = actor_of(city, "east")
    member = await orgs.members.create(ctx, east, city.org("branch_a1"), member_fields("郑清"))
    await add_members(ctx, city.branch_a1, 3)
    start = clock.now() + timedelta(days=1)
    meeting = await meetings.create(ctx, east, city.org("branch_a1"), {
        "type": "theme_day", "title": "主题党日：参观纪念馆", "start": start,
        "end": start + timedelta(hours=2), "place": "纪念馆"})
    await meetings.publish(ctx, east, meeting["_id"])
    clock.advance(timedelta(days=1, hours=3))
    await meetings.finish(ctx, east, meeting["_id"])

    await login(page, "auditor_a")
    for url in (f"/admin/orgs/{city.org('district_a')}", f"/admin/orgs/{city.org('branch_a1')}",
                f"/admin/members/{member['_id']}", f"/admin/meetings/{meeting['_id']}"):
        await page.goto(url)
        await expect(page.get_by_role("heading", name="操作")).to_have_count(0)
        # The only forms an auditor gets are searches and logging out.
        actions = await page.locator("form[method=post]").evaluate_all(
            "forms => forms.map(f => f.getAttribute('action') || location.pathname)")
        assert all(a.endswith(("/logout", "/members")) for a in actions), (url, actions)
    await page.goto(f"/admin/members/{member['_id']}")
    await expect(page.get_by_role("button", name="查看完整信息")).to_have_count(0)

    await page.goto("/admin/audit")
    log = page.locator("main, body").first
    await expect(log).to_contain_text("郑清")
    await expect(log).to_contain_text("东区第一党支部")
    text = await page.locator("table").first.inner_text()
    assert "发布会议" in text or "发布" in text
    assert not INTERNAL.search(text), INTERNAL.search(text)

    # A change by hand-made request: refused as read-only, and nothing changes.
    await page.goto(f"/admin/orgs/{city.org('branch_a1')}/members/new")
    await expect(page.get_by_text("审计员账号为只读")).to_be_visible()
    await expect(page.get_by_text("无权访问")).to_have_count(0)
