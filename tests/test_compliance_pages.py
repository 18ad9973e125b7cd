"""The compliance pages early in a month, their 达标率 columns and charts (issue #13, item 7).

On 3 December nobody has failed December yet: the running month reads 已开展 /
待开展, ended months 达标 / 未达标. Committees see the rate of each child
organisation and of the last 12 months as charts drawn by our own copy of Apache
ECharts, from the maintained roll-ups (a real browser draws them in
tests/browser/test_compliance_charts.py).
"""

from __future__ import annotations

import json
import re
from datetime import date

from tests.conftest import ADMIN_PASSWORD, actor_of
from tests.meetingkit import add_members, held
from wxbackend.clock import parse_instant
from wxbackend.services import orgs
from wxbackend.services.meetings import compliance
from wxbackend.services.meetings.compliance_core import months_back
from wxbackend.settings import ROOT

DEC, NOV = "2026-12", "2026-11"


async def november_and_december(ctx, city):
    """November opened for the three branches and judged (A1 only compliant); the clock
    on 3 December, when A1 has held all December owes and the others nothing yet."""
    ctx.clock.set(parse_instant("2026-11-02"))
    people = await add_members(ctx, city.branch_a1, 3)
    await compliance.open_running_month(ctx)
    # December also judges the quarter and the year: A1 held those in November.
    for day, kind in enumerate(("theme_day", "branch_assembly", "lecture", "life_meeting"), 2):
        await compliance.meeting_finished(ctx, await held(ctx, city.branch_a1, kind, date(2026, 11, day),
                                                          people, present=people))
    ctx.clock.set(parse_instant("2026-12-03"))
    await compliance.open_running_month(ctx)
    await compliance.meeting_finished(ctx, await held(ctx, city.branch_a1, "theme_day", date(2026, 12, 1),
                                                      people, present=people))
    return people


def card(html: str, marker: str) -> str:
    return html.split(marker, 1)[1].split("</div>", 1)[0]


async def test_the_running_month_reads_as_in_progress_not_failed(ctx, city, web):
    await november_and_december(ctx, city)
    await web.login("city", ADMIN_PASSWORD)
    root = city.org("root")
    panel = (await web.get(f"/admin/orgs/{root}")).text
    this, last = card(panel, 'id="compliance-this"'), card(panel, 'id="compliance-last"')
    assert '<dd class="done">1 个</dd>' in this and '<dd class="open">2 个</dd>' in this
    assert "已开展" in this and "待开展" in this and "未达标" not in this and "达标" not in this.replace("判定达标", "")
    assert "未达标" in last and '<dd class="open">2 个</dd>' in last and "33%" in last

    december = (await web.get(f"/admin/orgs/{root}/compliance?month={DEC}")).text
    summary = card(december, 'id="summary"')
    assert "本月进行中" in summary and "已开展支部" in summary and "待开展支部" in summary
    assert "未达标" not in summary
    assert '<dd id="compliant">1</dd>' in summary and '<dd id="non-compliant">2</dd>' in summary
    november = (await web.get(f"/admin/orgs/{root}/compliance?month={NOV}")).text
    summary = card(november, 'id="summary"')
    assert "未达标支部" in summary and "进行中" not in summary and '<dd id="rate">33%</dd>' in summary

    # Sub-committees have a 达标率 column.
    table = november.split('id="children"', 1)[1].split("</table>", 1)[0]
    assert "<th>达标率</th>" in table
    rows = {name: re.search(r'class="rate">([^<]*)<', row).group(1)
            for row in table.split("<tr>")[2:] for name in re.findall(r">(东区区委|西区区委)<", row)}
    assert rows == {"东区区委": "50%", "西区区委": "0%"}

    # A branch's page: December in progress with what is still to hold, November judged.
    branch = (await web.get(f"/admin/orgs/{city.org('branch_a2')}/compliance?month={DEC}")).text
    status = card(branch, 'id="status"')
    assert "进行中" in status and "未达标" not in status and "待开展" in status


async def test_a_committee_month_keeps_the_branches_it_was_judged_on(ctx, city):
    await november_and_december(ctx, city)
    # A branch set up in December was not there to be judged in November.
    await orgs.create(ctx, actor_of(city, "city"), city.org("district_a"), name="东区第三党支部",
                      org_type="branch", category="organ", code="A3")
    viewer = actor_of(city, "city")
    november = await compliance.committee_summary(ctx, viewer, city.org("root"), NOV)
    assert (november.branches, november.compliant, november.phase) == (3, 1, "closed")
    assert {r.org["name"]: (r.branches, r.compliant) for r in november.children} == {
        "东区区委": (2, 1), "西区区委": (1, 0)}
    east = await compliance.committee_summary(ctx, viewer, city.org("district_a"), NOV)
    assert [r.org["name"] for r in east.children] == ["东区第一党支部", "东区第二党支部"]
    december = await compliance.committee_summary(ctx, viewer, city.org("root"), DEC)
    assert (december.branches, december.compliant, december.in_progress) == (4, 1, True)
    trend = await compliance.committee_trend(ctx, viewer, city.org("root"), DEC)
    assert [p.month for p in trend] == months_back(DEC, 12)
    assert [(p.month, p.branches, p.compliant, p.phase) for p in trend[-2:]] == [
        (NOV, 3, 1, "closed"), (DEC, 4, 1, "running")]
    assert trend[-2].rate == 1 / 3


async def test_the_committee_page_carries_its_chart_data_and_our_own_echarts(ctx, city, web):
    await november_and_december(ctx, city)
    await web.login("city", ADMIN_PASSWORD)
    url = f"/admin/orgs/{city.org('root')}/compliance?month={NOV}"
    page = (await web.get(url)).text
    assert 'id="chart-suborgs"' in page and 'id="chart-trend"' in page
    # Data for the charts: the roll-ups, in a JSON block (no inline script on the page).
    block = re.search(r'<script type="application/json" id="compliance-chart-data">(.*?)</script>', page, re.S)
    data = json.loads(block.group(1))
    assert [(s["name"], s["rate"]) for s in data["suborgs"]] == [("东区区委", 50.0), ("西区区委", 0.0)]
    assert len(data["trend"]) == 12 and data["trend"][-1] == {
        "month": NOV, "rate": 33.3, "compliant": 1, "branches": 3, "in_progress": False}
    assert data["trend"][0]["month"] == "2025-12" and data["trend"][0]["rate"] is None  # nothing recorded
    scripts = re.findall(r"<script([^>]*)>", page)
    assert all("src=" in s or 'type="application/json"' in s for s in scripts), scripts
    sources = [re.search(r'src="([^"]+)"', s).group(1) for s in scripts if "src=" in s]
    assert [s.split("?")[0] for s in sources[-2:]] == ["/static/vendor/echarts/echarts.min.js",
                                                       "/static/compliance-charts.js"]
    for source in sources:  # served by us, not a CDN
        served = await web.get(source)
        assert served.status_code == 200 and "javascript" in served.headers["content-type"], source
    assert (await web.get(sources[-2])).text.lstrip().startswith("/*\n* Licensed to the Apache")
    vendor = ROOT / "static" / "vendor" / "echarts"
    assert {"LICENSE", "NOTICE", "echarts.min.js"} <= {p.name for p in vendor.iterdir()}

