"""The secretary's meeting pages over HTTP: plan, publish, materials, live pages, minutes, scope."""

import re
import time
from datetime import date, timedelta

import pytest
import tornado.escape
from bson import ObjectId

from models import meetings as meetings_model
from models import members as members_model
from models import orgs as orgs_model
from tests.conftest import ADMIN_PASSWORD, actor_of
from tests.factories import member_fields
from tests.meetings_helpers import notices
from tests.webclient import WebClient
from wxbackend.clock import SHANGHAI
from wxbackend.services import orgs
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


# -- the planning form (issue #13 item 6) -------------------------------------------------

def checkbox(member_id):
    """The picker's checkbox of a member, ``checked`` or not, as the page writes it."""
    return re.compile(rf'<input type="checkbox" id="f-member-{member_id}" name="member_ids" value="{member_id}"\s*(checked)?>')


def ticked(page, member_id):
    found = checkbox(member_id).search(page)
    assert found, f"no checkbox for {member_id}"
    return found.group(1) == "checked"


async def meeting_count(ctx, branch):
    return await ctx.db.meetings.count_documents({"org_id": branch})


def form_of(ctx, **extra):
    start = ctx.clock.now().astimezone(SHANGHAI) + timedelta(days=2)
    return {"type": "lecture", "title": "党课", "start": local(start), "end": local(start + timedelta(hours=1)),
            **extra}


async def test_the_form_picks_attendees_by_name_and_refuses_other_branches(ctx, city, secretary):
    ours = await people(ctx, city, 3)
    stranger = await members.create(ctx, actor_of(city, "city"), city.org("branch_b1"), member_fields("外支部甲"))
    branch = city.org("branch_a1")
    page = (await secretary.get(f"/admin/orgs/{branch}/meetings/new")).text
    for person in ours:
        assert f'<label for="f-member-{person["_id"]}">{person["name"]}</label>' in page
        assert not ticked(page, person["_id"])
    assert "外支部甲" not in page and "空格分隔" not in page

    picked = [str(ours[0]["_id"]), str(stranger["_id"])]
    refused = await secretary.post_form(f"/admin/orgs/{branch}/meetings/new",
                                        form_of(ctx, audience="list", member_ids=picked))
    assert refused.status_code == 400 and 'data-field="member_ids"' in refused.text
    assert "不是本支部的在册党员" in refused.text and ticked(refused.text, ours[0]["_id"])
    assert await meeting_count(ctx, branch) == 0

    picked = [str(ours[0]["_id"]), str(ours[1]["_id"])]
    page_url = (await secretary.post_form(f"/admin/orgs/{branch}/meetings/new",
                                          form_of(ctx, audience="list", member_ids=picked))).headers["location"]
    stored = await meetings_model.get(ctx.db, ObjectId(page_url.split("?")[0].rsplit("/", 1)[1]))
    assert stored["audience"] == {"kind": "list", "member_ids": [ours[0]["_id"], ours[1]["_id"]]}
    edit = (await secretary.get(f"/admin/meetings/{stored['_id']}/edit")).text
    assert [ticked(edit, p["_id"]) for p in ours] == [True, True, False]
    assert 'id="f-audience-list" name="audience" value="list" checked' in edit


async def big_branch(ctx, org, n):
    """``n`` members written in bulk (the counters moved as the importer moves them)."""
    docs = []
    for i in range(n):
        name = "李明" if i % 400 == 7 else f"成员{i:04d}"
        clean, errors = members.validate_fields(member_fields(name, birth=date(1950, 1, 1) + timedelta(days=9 * i)),
                                                today=ctx.clock.today())
        assert not errors
        docs.append(members.new_document(ctx, clean, org))
    await members_model.insert_many(ctx.db, docs)
    await orgs_model.adjust_member_counts(ctx.db, org["_id"], org["org_ancestors"], n, n)
    return docs


async def test_a_large_branch_is_searched_by_name_not_listed(ctx, city, secretary):
    branch = city.org("branch_a1")
    docs = await big_branch(ctx, city.branch_a1, 1200)
    namesakes = [d for d in docs if d["name"] == "李明"]
    started = time.monotonic()
    page = await secretary.get(f"/admin/orgs/{branch}/meetings/new")
    assert page.status_code == 200 and time.monotonic() - started < 2
    assert 'id="f-member_q"' in page.text and "本支部有 1200 名党员" in page.text
    assert 'name="member_ids"' not in page.text and len(page.text) < 40_000

    found = await secretary.post_form(f"/admin/orgs/{branch}/meetings/new",
                                      form_of(ctx, audience="list", member_q="李明", find_members="1"))
    assert found.status_code == 200 and 'value="党课"' in found.text
    assert found.text.count('name="member_ids"') == 3
    hints = {re.search(rf'f-member-{d["_id"]}">李明</label> <span class="muted">([^<]+)<', found.text).group(1)
             for d in namesakes}
    assert len(hints) == 3            # three 李明, told apart by their birth years
    assert await meeting_count(ctx, branch) == 0

    saved = await secretary.post_form(f"/admin/orgs/{branch}/meetings/new",
                                      form_of(ctx, audience="list", member_ids=[str(namesakes[1]["_id"])]))
    assert saved.status_code == 302, saved.text
    stored = await meetings_model.get(ctx.db, ObjectId(saved.headers["location"].split("?")[0].rsplit("/", 1)[1]))
    assert stored["audience"]["member_ids"] == [namesakes[1]["_id"]]
    edit = (await secretary.get(f"/admin/meetings/{stored['_id']}/edit")).text
    assert edit.count('name="member_ids"') == 1 and ticked(edit, namesakes[1]["_id"])


async def test_text_boxes_take_the_whole_width_of_the_form(ctx, city, secretary):
    page = (await secretary.get(f"/admin/orgs/{city.org('branch_a1')}/meetings/new")).text
    assert '<table class="form">' in page
    for field in ("title", "topic", "place"):
        tag = re.search(rf'<input id="f-{field}"[^>]*>', page).group(0)
        assert 'type="text"' in tag and "size=" not in tag
    assert re.search(r'<textarea id="f-agenda"[^>]*>', page) and "cols=" not in page.split('id="f-agenda"')[1][:40]
    css_url = re.search(r'href="(/static/admin\.css[^"]*)"', page).group(1)
    css = (await secretary.get(css_url)).text
    rules = {selectors.strip(): body for selectors, body in re.findall(r"([^{}]+)\{([^}]*)\}", css)}
    wide = [s for s, body in rules.items() if re.search(r"(^|;)\s*width:\s*100%", body)]
    covered = {part.strip() for s in wide for part in s.split(",")}
    assert {"table.form input[type=text]", "table.form input[type=url]", "table.form textarea"} <= covered


async def test_the_form_offers_only_meeting_types_the_branch_can_hold(ctx, city, secretary):
    ours = await people(ctx, city, 3)
    branch = city.org("branch_a1")
    page = (await secretary.get(f"/admin/orgs/{branch}/meetings/new")).text
    assert '<option value="lecture"' in page
    assert '<option value="committee"' not in page and '<option value="group"' not in page
    assert "不能召开支委会" in page
    refused = await secretary.post_form(f"/admin/orgs/{branch}/meetings/new", form_of(ctx, type="committee"))
    assert refused.status_code == 400 and 'data-field="type"' in refused.text and "未设立支部委员会" in refused.text
    assert await meeting_count(ctx, branch) == 0

    await orgs.set_leadership(ctx, actor_of(city, "east"), branch, secretary_id=ours[0]["_id"],
                              committee=[(ours[1]["_id"], "组织委员"), (ours[2]["_id"], "宣传委员")])
    page = (await secretary.get(f"/admin/orgs/{branch}/meetings/new")).text
    assert '<option value="committee"' in page and 'id="f-audience-committee"' in page
    made = await secretary.post_form(f"/admin/orgs/{branch}/meetings/new",
                                     form_of(ctx, type="committee", audience="committee"))
    assert made.status_code == 302, made.text


async def test_a_past_meeting_is_a_confirmed_record_and_notifies_nobody(ctx, city, secretary):
    ours = await people(ctx, city, 2)
    branch = city.org("branch_a1")
    start = ctx.clock.now().astimezone(SHANGHAI) - timedelta(days=3)
    past = {"type": "lecture", "title": "补录党课", "start": local(start), "end": local(start + timedelta(hours=1))}
    warned = await secretary.post_form(f"/admin/orgs/{branch}/meetings/new", past)
    assert warned.status_code == 400 and 'data-field="confirm_past"' in warned.text
    assert "会议时间已过" in warned.text and 'id="f-confirm_past"' in warned.text
    assert await meeting_count(ctx, branch) == 0
    saved = await secretary.post_form(f"/admin/orgs/{branch}/meetings/new", {**past, "confirm_past": "on"})
    assert saved.status_code == 302, saved.text
    assert "补录草稿" in tornado.escape.url_unescape(saved.headers["location"])
    page_url = saved.headers["location"].split("?")[0]

    page = (await secretary.get(page_url)).text
    assert "发布（补录）" in page and 'name="confirm_past" required' in page
    refused = await secretary.post_form(f"{page_url}/publish")
    assert refused.status_code == 422 and "会议时间已过" in refused.text
    meeting_id = ObjectId(page_url.rsplit("/", 1)[1])
    assert (await meetings_model.get(ctx.db, meeting_id))["status"] == "draft"
    published = await secretary.post_form(f"{page_url}/publish", {"confirm_past": "on"})
    assert published.status_code == 302
    assert "未通知参会党员" in tornado.escape.url_unescape(published.headers["location"])
    assert (await meetings_model.get(ctx.db, meeting_id))["status"] == "planned"
    assert await notices(ctx, ours) == {"党员0": [], "党员1": []}
    assert 'id="backfilled"' in (await secretary.get(page_url)).text


async def test_no_empty_action_sections_on_finished_meetings_or_for_auditors(ctx, city, server_url, secretary):
    ours = await people(ctx, city, 1)
    start = ctx.clock.now().replace(microsecond=0) - timedelta(days=2)
    done = meetings_model.new_meeting(
        city.branch_a1, "lecture", "已结束的党课", start, start + timedelta(hours=1), {"user_id": None, "name": "书记"},
        SHANGHAI, now=start, status="finished", expected=[ours[0]["_id"]], expected_count=1,
        minutes={"text": "记录", "recorded_by": "书记", "recorded_at": start, "confirmed_by": "书记",
                 "confirmed_at": start, "amendments": []})
    await meetings_model.insert(ctx.db, done)
    page = (await secretary.get(f"/admin/meetings/{done['_id']}")).text
    assert "已结束的党课" in page and "<h2>操作</h2>" not in page and 'id="actions"' not in page

    draft_url = await plan_from_the_web(secretary, city.org("branch_a1"),
                                        ctx.clock.now().astimezone(SHANGHAI) + timedelta(days=1))
    assert "<h2>操作</h2>" in (await secretary.get(draft_url)).text
    auditor = WebClient(server_url)
    try:
        await auditor.login("auditor_a", ADMIN_PASSWORD)
        seen = [(await auditor.get(url)).text for url in (draft_url, f"/admin/meetings/{done['_id']}")]
    finally:
        await auditor.close()
    for text in seen:
        assert "<h2>操作</h2>" not in text and "<th></th>" not in text and "代签到" not in text
