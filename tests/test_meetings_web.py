"""The secretary's meeting pages over HTTP: plan, publish, materials, live pages, minutes, scope."""

import re
from datetime import timedelta

import pytest
from bson import ObjectId

from models import meetings as meetings_model
from tests.conftest import ADMIN_PASSWORD, actor_of
from tests.factories import member_fields
from tests.webclient import WebClient
from wxbackend.clock import SHANGHAI
from wxbackend.services.meetings import checkin, checkin_codes
from wxbackend.services.orgs import members


@pytest.fixture
async def secretary(city, server_url):
    client = WebClient(server_url)
    await client.login("sec_a1", ADMIN_PASSWORD)
    yield client
    await client.close()


async def people(ctx, city, n):
    return [await members.create(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), member_fields(f"党员{i}"))
            for i in range(n)]


def local(dt):
    return dt.astimezone(SHANGHAI).strftime("%Y-%m-%dT%H:%M")


async def test_a_secretary_runs_a_meeting_from_the_web(ctx, city, secretary):
    attendees = await people(ctx, city, 3)
    branch = city.org("branch_a1")
    start = ctx.clock.now().astimezone(SHANGHAI) - timedelta(minutes=5)
    form = {"type": "branch_assembly", "title": "第一季度支部党员大会", "topic": "学习", "place": "会议室",
            "start": local(start), "end": local(start + timedelta(hours=1)), "audience": "branch"}
    bad = await secretary.post_form(f"/admin/orgs/{branch}/meetings/new", {**form, "title": ""})
    assert bad.status_code == 400 and 'data-field="title"' in bad.text
    created = await secretary.post_form(f"/admin/orgs/{branch}/meetings/new", form)
    assert created.status_code == 302, created.text
    page_url = created.headers["location"].split("?")[0]
    meeting_id = page_url.rsplit("/", 1)[1]
    assert (await secretary.post_form(f"{page_url}/publish")).status_code == 302
    page = await secretary.get(page_url)
    assert page.status_code == 200 and "第一季度支部党员大会" in page.text and "进行中" in page.text
    upload = await secretary.request("POST", f"{page_url}/materials",
                                     data={"_xsrf": await secretary.xsrf()},
                                     files={"file": ("议程.pdf", b"%PDF-1.7 agenda", "application/pdf")})
    assert upload.status_code == 302, upload.text
    refused = await secretary.request("POST", f"{page_url}/materials", data={"_xsrf": await secretary.xsrf()},
                                      files={"file": ("virus.exe", b"MZ", "application/octet-stream")})
    assert refused.status_code == 400 and "不支持该文件类型" in refused.text
    stored = await meetings_model.get(ctx.db, ObjectId(meeting_id))
    assert [m["name"] for m in stored["materials"]] == ["议程.pdf"]
    download = await secretary.get(f"{page_url}/materials/{stored['materials'][0]['file_id']}")
    assert download.content == b"%PDF-1.7 agenda"

    screen = (await secretary.get(f"{page_url}/screen.json")).json()
    assert screen["image"].startswith("data:image/png;base64,") and 0 < screen["refresh_in"] <= 30
    assert checkin_codes.verify_token(ctx, screen["token"], ctx.clock.now().astimezone(SHANGHAI)) == stored["_id"]
    assert "screen.json" in (await secretary.get(f"{page_url}/screen")).text
    await checkin.check_in_member(ctx, stored["_id"], attendees[0], "rotating", token=screen["token"])
    manual = await secretary.post_form(f"{page_url}/checkin", {"member_id": str(attendees[1]["_id"])})
    assert manual.status_code == 302
    board = (await secretary.get(f"{page_url}/board.json")).json()
    assert board["present"] == 2 and board["absent"] == 1 and board["missing"] == ["党员2"]
    assert {a["how"] for a in board["arrived"]} == {"现场动态码", "书记代签"}
    assert "board.json" in (await secretary.get(f"{page_url}/board")).text

    assert (await secretary.post_form(f"{page_url}/finish")).status_code == 302
    assert (await secretary.post_form(f"{page_url}/minutes", {"text": "会议记录：全体通过"})).status_code == 302
    assert (await secretary.post_form(f"{page_url}/confirm-minutes")).status_code == 302
    again = await secretary.post_form(f"{page_url}/minutes", {"text": "改"})
    assert again.status_code == 409
    final = await secretary.get(page_url)
    assert "会议记录：全体通过" in final.text and "（只读）" in final.text and "修正会议记录" in final.text

    month = start.strftime("%Y-%m")
    cal = await secretary.get(f"/admin/orgs/{branch}/meetings?month={month}")
    assert cal.status_code == 200 and f"/admin/meetings/{meeting_id}" in cal.text


async def test_other_committees_see_nothing_and_auditors_only_look(ctx, city, server_url, secretary):
    await people(ctx, city, 1)
    branch = city.org("branch_a1")
    start = ctx.clock.now().astimezone(SHANGHAI) + timedelta(days=1)
    created = await secretary.post_form(f"/admin/orgs/{branch}/meetings/new", {
        "type": "lecture", "title": "党课", "start": local(start), "end": local(start + timedelta(hours=1))})
    page_url = created.headers["location"].split("?")[0]
    west, auditor = WebClient(server_url), WebClient(server_url)
    try:
        await west.login("west", ADMIN_PASSWORD)
        await auditor.login("auditor_a", ADMIN_PASSWORD)
        assert (await west.get(page_url)).status_code == 403
        assert (await west.get(f"/admin/orgs/{branch}/meetings")).status_code == 403
        looked = await auditor.get(page_url)
        assert looked.status_code == 200 and "发布并通知参会党员" not in looked.text
        assert (await auditor.post_form(f"{page_url}/publish")).status_code == 403
        assert (await auditor.get(f"{page_url}/screen.json")).status_code == 403
    finally:
        await west.close()
        await auditor.close()
    stored = await meetings_model.get(ctx.db, ObjectId(page_url.rsplit("/", 1)[1]))
    assert stored["status"] == "draft"
    assert re.search(r"草稿", (await secretary.get(page_url)).text)
