"""Check-in through WeChat, played by the sandbox: each way that remains, end to end.

- the official account's QR code, made when the meeting is published (the job), scanned in WeChat;
- the printed mini-program code: the scene the sandbox put in it, posted by the page it opens;
- the rotating code on the secretary's screen, scanned with the mini-program;
- the secretary's check-in by hand on the meeting page.

The phone logs in through the sandbox (wx.login) and binds as the mini-program does.
"""

import asyncio
from datetime import timedelta

import pytest
from bson import ObjectId

from tests.conftest import ADMIN_PASSWORD, actor_of
from tests.factories import member_fields
from tests.meetings_helpers import (
    add_people,
    bind,
    build_town,
    live_meeting,
    make_codes,
    phone_through_wechat,
    planned_meeting,
    reload,
)
from tests.webclient import WebClient
from wxbackend import jobs
from wxbackend.clock import SHANGHAI
from wxbackend.services import meetings
from wxbackend.services.meetings import checkin_codes, printed_codes
from wxbackend.services.orgs import members

API = "/api/v1/meetings"


@pytest.fixture
async def town(ctx):
    return await build_town(ctx)


@pytest.fixture
async def wechat(sandbox, server_url):
    """The sandbox's users talk to our /wechat/oa."""
    sandbox.config.callback_url = server_url + "/wechat/oa"
    return sandbox


async def scan(sandbox, openid, **body):
    answer = await sandbox.http.post(f"/sandbox/users/{openid}/scan", json=body)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["error"] is None, result          # WeChat would accept our answer
    return result["reply"]["Content"] if result["reply"] else None


async def test_official_account_code_made_at_publication_checks_in_once(ctx, town, wechat):
    people = await add_people(ctx, town, 2)
    await wechat.follow("oScan1")
    await bind(ctx, people[0], "oa", "oScan1")
    meeting = await live_meeting(ctx, town)
    # Publishing queued the job and called WeChat for nothing itself.
    assert (await jobs.job_exists(ctx, [printed_codes.job_id(meeting["_id"])]))[printed_codes.job_id(meeting["_id"])]
    assert wechat.calls("/cgi-bin/qrcode/create") == 0
    stored = await make_codes(ctx, meeting)
    qr = stored["qr"]
    assert qr["oa_expires_at"] > meeting["end"] and wechat.calls("/cgi-bin/qrcode/create") == 1
    again = await make_codes(ctx, stored)
    assert again["qr"]["oa_ticket"] == qr["oa_ticket"] and wechat.calls("/cgi-bin/qrcode/create") == 1
    assert wechat.world.qrcodes[qr["oa_ticket"]]["scene"] == checkin_codes.oa_scene(stored)
    first = await scan(wechat, "oScan1", url=qr["oa_url"])     # what a camera reads from the printout
    assert first.startswith("签到成功：三月主题党日")
    await asyncio.sleep(1.05)   # a scan in the same second is the same event (WeChat's retry)
    second = await scan(wechat, "oScan1", ticket=qr["oa_ticket"])
    assert second.startswith("已签到：三月主题党日，首次签到时间")
    stored = await reload(ctx, meeting)
    assert stored["counts"]["present"] == 1
    assert stored["attendance"][str(people[0]["_id"])]["how"] == "oa_qr"


async def test_printed_mini_program_code_checks_in_with_its_scene(ctx, town, wechat, api):
    people = await add_people(ctx, town, 2)
    phone = await phone_through_wechat(api, wechat, people[0], "oMini1")
    meeting = await make_codes(ctx, await live_meeting(ctx, town))
    issued = (await wechat.http.get("/sandbox/mp/codes")).json()["codes"]
    assert [c["page"] for c in issued] == [ctx.settings.meetings.mp_checkin_page]
    scene = issued[0]["scene"]           # what the page the code opens receives
    assert len(scene) == 32 and scene == checkin_codes.mp_scene(meeting)
    answer = await api.post(f"{API}/checkin", headers=phone, json={"scene": scene, "nonce": "scan-1"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["code"] == "checked_in" and body["how"] == "mp_code" and body["meeting"]["id"] == str(meeting["_id"])
    # The meeting page's own scan names the meeting; the same scene is accepted there too.
    again = await api.post(f"{API}/{meeting['_id']}/checkin", headers=phone, json={"scene": scene})
    assert again.json()["code"] == "already_checked_in"
    stored = await reload(ctx, meeting)
    assert stored["counts"]["present"] == 1 and stored["attendance"][str(people[0]["_id"])]["how"] == "mp_code"


async def test_rotating_screen_code_scanned_with_the_mini_program(ctx, town, wechat, api):
    people = await add_people(ctx, town, 1)
    phone = await phone_through_wechat(api, wechat, people[0], "oMini1")
    meeting = await live_meeting(ctx, town, rotating_only=True)
    token = checkin_codes.rotating_token(ctx, meeting["_id"])     # what the screen shows now
    answer = await api.post(f"{API}/checkin", headers=phone, json={"token": token})
    assert answer.status_code == 200, answer.text
    assert answer.json()["code"] == "checked_in" and answer.json()["how"] == "rotating"
    stored = await reload(ctx, meeting)
    assert stored["counts"]["present"] == 1 and stored["attendance"][str(people[0]["_id"])]["how"] == "rotating"


async def test_secretary_checks_a_member_in_by_hand(ctx, city, wechat, server_url):
    member = await members.create(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), member_fields("到会党员"))
    start = ctx.clock.now().astimezone(SHANGHAI) - timedelta(minutes=5)
    draft = await meetings.create(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), {
        "type": "lecture", "title": "党课", "start": start, "end": start + timedelta(hours=1)})
    await meetings.publish(ctx, actor_of(city, "sec_a1"), draft["_id"])
    secretary = WebClient(server_url)
    try:
        await secretary.login("sec_a1", ADMIN_PASSWORD)
        page = f"/admin/meetings/{draft['_id']}"
        done = await secretary.post_form(f"{page}/checkin", {"member_id": str(member["_id"])})
        assert done.status_code == 302, done.text
        board = (await secretary.get(f"{page}/board.json")).json()
    finally:
        await secretary.close()
    assert board["present"] == 1 and board["arrived"][0]["how"] == "书记代签"
    stored = await reload(ctx, draft)
    assert stored["attendance"][str(member["_id"])]["by"] == "sec_a1"


async def test_an_unbound_scanner_gets_the_binding_link_and_nothing_is_recorded(ctx, town, wechat):
    await add_people(ctx, town, 1)
    meeting = await live_meeting(ctx, town)
    reply = await scan(wechat, "oNewcomer", scene=checkin_codes.oa_scene(meeting))   # subscribe + qrscene_
    assert "您还没有绑定党员身份" in reply and "/wechat/oa/bind" in reply
    assert (await reload(ctx, meeting))["attendance"] == {}


async def test_scans_refused_with_the_reason(ctx, town, wechat):
    people = await add_people(ctx, town, 1)
    stranger = (await add_people(ctx, town, 1, other=True))[0]
    await wechat.follow("oScan1")
    await wechat.follow("oStranger")
    await bind(ctx, people[0], "oa", "oScan1")
    await bind(ctx, stranger, "oa", "oStranger")
    meeting = await live_meeting(ctx, town)
    later = await planned_meeting(ctx, town, ctx.clock.now() + timedelta(days=1))
    cancelled = await live_meeting(ctx, town)
    await meetings.cancel(ctx, town.secretary, cancelled["_id"])
    assert "这不是您所在党支部的会议" in await scan(wechat, "oStranger", scene=checkin_codes.oa_scene(meeting))
    assert "签到尚未开始" in await scan(wechat, "oScan1", scene=checkin_codes.oa_scene(later))
    assert "已取消" in await scan(wechat, "oScan1", scene=checkin_codes.oa_scene(cancelled))
    assert "签到码无效" in await scan(wechat, "oScan1", scene="checkin:not-a-meeting")
    missing = {"_id": ObjectId(), "checkin_secret": meeting["checkin_secret"]}
    assert "会议不存在" in await scan(wechat, "oScan1", scene=checkin_codes.oa_scene(missing))
    for m in (meeting, later, cancelled):
        assert (await reload(ctx, m))["attendance"] == {}


async def test_the_keyword_lists_upcoming_meetings(ctx, town, wechat):
    people = await add_people(ctx, town, 1)
    await wechat.follow("oScan1")
    await bind(ctx, people[0], "oa", "oScan1")
    await planned_meeting(ctx, town, ctx.clock.now() + timedelta(days=1))
    said = await wechat.http.post("/sandbox/users/oScan1/say", json={"content": "会议"})
    text = said.json()["reply"]["Content"]
    assert text.startswith("您近期的组织生活") and "主题党日：三月主题党日，党员活动室" in text


async def test_codes_are_made_once_and_served_from_storage(ctx, town, wechat):
    await add_people(ctx, town, 1)
    meeting = await make_codes(ctx, await live_meeting(ctx, town))
    image = await printed_codes.image(ctx, town.secretary, meeting["_id"], "mp")
    assert image.startswith(b"\x89PNG")
    again = await printed_codes.image(ctx, town.secretary, meeting["_id"], "mp")
    assert again == image and wechat.calls("/wxa/getwxacodeunlimit") == 1
    printed = await printed_codes.image(ctx, town.secretary, meeting["_id"], "oa")
    assert printed.startswith(b"\x89PNG") and wechat.calls("/cgi-bin/qrcode/create") == 1
