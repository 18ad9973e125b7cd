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


async def plan_from_the_web(secretary, branch, start, **extra):
    created = await secretary.post_form(f"/admin/orgs/{branch}/meetings/new", {
        "type": "lecture", "title": "党课", "start": local(start), "end": local(start + timedelta(hours=1)),
        **extra})
    assert created.status_code == 302, created.text
    return created.headers["location"].split("?")[0]


async def test_printable_codes_are_made_by_publishing_or_a_post_never_by_a_get(ctx, city, secretary, sandbox):
    await people(ctx, city, 1)
    branch = city.org("branch_a1")
    page_url = await plan_from_the_web(secretary, branch, ctx.clock.now().astimezone(SHANGHAI))
    meeting_id = ObjectId(page_url.rsplit("/", 1)[1])
    wechat_calls = ("/cgi-bin/qrcode/create", "/wxa/getwxacodeunlimit")

    # A draft: a GET (a link on another site would send the cookie with it) calls WeChat for nothing.
    for which in ("oa", "mp"):
        answer = await secretary.get(f"{page_url}/qr/{which}.png")
        assert answer.status_code == 404 and "会议尚未发布" in answer.text
    assert (await secretary.post_form(f"{page_url}/codes")).status_code == 422
    assert [sandbox.calls(api) for api in wechat_calls] == [0, 0]
    assert (await meetings_model.get(ctx.db, meeting_id))["qr"] == {}

    # Published: the job is queued, nothing made yet; the GET still makes nothing.
    assert (await secretary.post_form(f"{page_url}/publish")).status_code == 302
    answer = await secretary.get(f"{page_url}/qr/mp.png")
    assert answer.status_code == 404 and "签到码尚未生成" in answer.text
    assert "生成签到码" in (await secretary.get(page_url)).text
    # 生成签到码 is a POST behind XSRF: without the token it is refused and nothing is made.
    forged = await secretary.post_form(f"{page_url}/codes", xsrf=False)
    assert forged.status_code == 403
    assert [sandbox.calls(api) for api in wechat_calls] == [0, 0]
    assert (await meetings_model.get(ctx.db, meeting_id))["qr"] == {}

    made = await secretary.post_form(f"{page_url}/codes")
    assert made.status_code == 302, made.text
    assert [sandbox.calls(api) for api in wechat_calls] == [1, 1]
    images = [await secretary.get(f"{page_url}/qr/{which}.png") for which in ("oa", "mp", "oa", "mp")]
    assert all(i.status_code == 200 and i.content.startswith(b"\x89PNG") for i in images)
    assert images[1].content == images[3].content and "no-store" in images[1].headers["cache-control"]
    assert [sandbox.calls(api) for api in wechat_calls] == [1, 1]
    stored = await meetings_model.get(ctx.db, meeting_id)
    page = (await secretary.get(page_url)).text
    assert "小程序签到码（打印）" in page and stored["checkin_secret"] not in page


async def test_only_the_secretary_sees_the_codes_and_no_page_shows_the_secret(ctx, city, server_url, secretary, sandbox):
    attendees = await people(ctx, city, 2)
    branch = city.org("branch_a1")
    page_url = await plan_from_the_web(secretary, branch, ctx.clock.now().astimezone(SHANGHAI))
    assert (await secretary.post_form(f"{page_url}/publish")).status_code == 302
    assert (await secretary.post_form(f"{page_url}/codes")).status_code == 302
    stored = await meetings_model.get(ctx.db, ObjectId(page_url.rsplit("/", 1)[1]))
    await checkin.check_in_member(ctx, stored["_id"], attendees[0], scene=checkin_codes.mp_scene(stored))
    auditor = WebClient(server_url)
    try:
        await auditor.login("auditor_a", ADMIN_PASSWORD)
        for which in ("oa", "mp"):
            assert (await auditor.get(f"{page_url}/qr/{which}.png")).status_code == 403
        assert (await auditor.post_form(f"{page_url}/renew-codes")).status_code == 403
        seen = [await auditor.get(page_url), await auditor.get(f"{page_url}/board.json"),
                await secretary.get(page_url), await secretary.get(f"{page_url}/board.json"),
                await secretary.get(f"{page_url}/screen.json"), await secretary.get(f"{page_url}/edit")]
    finally:
        await auditor.close()
    for answer in seen:
        assert answer.status_code == 200, answer.text
        assert stored["checkin_secret"] not in answer.text and stored["qr"]["oa_url"] not in answer.text
    assert "生成签到码" not in seen[0].text and "小程序签到码（打印）" in seen[2].text
    assert (await meetings_model.get(ctx.db, stored["_id"]))["checkin_secret"] == stored["checkin_secret"]


async def test_the_form_sets_rotating_only_and_the_meeting_place(ctx, city, secretary):
    await people(ctx, city, 1)
    branch = city.org("branch_a1")
    start = ctx.clock.now().astimezone(SHANGHAI) + timedelta(days=1)
    form = {"type": "lecture", "title": "党课", "start": local(start), "end": local(start + timedelta(hours=1))}
    bad = await secretary.post_form(f"/admin/orgs/{branch}/meetings/new", {**form, "latitude": "99", "longitude": ""})
    assert bad.status_code == 400 and 'data-field="latitude"' in bad.text and 'data-field="longitude"' in bad.text
    page_url = await plan_from_the_web(secretary, branch, start, rotating_only="on",
                                          latitude="24.479834", longitude="118.089425")
    stored = await meetings_model.get(ctx.db, ObjectId(page_url.rsplit("/", 1)[1]))
    assert stored["rotating_only"] is True and stored["geo"] == {"lat": 24.479834, "lng": 118.089425}
    edit = (await secretary.get(f"{page_url}/edit")).text
    assert 'name="rotating_only" checked' in edit and 'value="24.479834"' in edit
    cleared = await secretary.post_form(f"{page_url}/edit", {**form, "latitude": "", "longitude": ""})
    assert cleared.status_code == 302, cleared.text
    stored = await meetings_model.get(ctx.db, stored["_id"])
    assert stored["rotating_only"] is False and stored["geo"] is None
