"""Journey: a committee opens its 三会一课 page and sees both charts drawn (issue #13, item 7).

The charts are our own copy of Apache ECharts (static/vendor/echarts/) driven by
static/compliance-charts.js; each container gets ``data-rendered="1"`` once drawn.
"""

from __future__ import annotations

from datetime import date

from tests.browser.conftest import login
from tests.meetingkit import add_members, held
from wxbackend.clock import parse_instant
from wxbackend.services.meetings import compliance


async def test_the_committee_sees_the_rate_per_sub_organisation_and_over_twelve_months(ctx, city, page):
    ctx.clock.set(parse_instant("2026-11-02"))
    people = await add_members(ctx, city.branch_a1, 3)
    await compliance.open_running_month(ctx)
    await compliance.meeting_finished(ctx, await held(ctx, city.branch_a1, "theme_day", date(2026, 11, 2),
                                                      people, present=people))
    ctx.clock.set(parse_instant("2026-12-03"))
    await login(page, "city")
    scripts: list[str] = []
    page.on("request", lambda request: request.resource_type == "script" and scripts.append(request.url))
    await page.goto(f"/admin/orgs/{city.org('root')}/compliance?month=2026-11")
    for chart in ("#chart-suborgs", "#chart-trend"):
        await page.wait_for_selector(f'{chart}[data-rendered="1"]')
        assert await page.locator(f"{chart} canvas").count() == 1
        box = await page.locator(chart).bounding_box()
        assert box and box["width"] > 200 and box["height"] > 200
    # Every script came from our own server.
    assert scripts and all(url.startswith(page.url.split("/admin/")[0] + "/static/") for url in scripts), scripts
    assert await page.evaluate("typeof echarts.version") == "string"
