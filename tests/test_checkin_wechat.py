"""Check-in through WeChat, played by the sandbox: the official account's QR code and the codes we print."""

import asyncio
from datetime import timedelta

import pytest

from tests.meetings_helpers import (
    add_people,
    bind,
    build_town,
    live_meeting,
    planned_meeting,
    reload,
)
from wxbackend.services import meetings
from wxbackend.services.meetings import checkin_codes


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


async def test_scanning_the_printed_code_checks_in_once(ctx, town, wechat):
    people = await add_people(ctx, town, 2)
    await wechat.follow("oScan1")
    await bind(ctx, people[0], "oa", "oScan1")
    meeting = await live_meeting(ctx, town)
    qr = await checkin_codes.oa_qr(ctx, meeting)
    assert qr["expires_at"] > meeting["end"]
    again = await checkin_codes.oa_qr(ctx, await reload(ctx, meeting))
    assert again["ticket"] == qr["ticket"] and wechat.calls("/cgi-bin/qrcode/create") == 1
    first = await scan(wechat, "oScan1", ticket=qr["ticket"])
    assert first.startswith("签到成功：三月主题党日")
    await asyncio.sleep(1.05)   # a scan in the same second is the same event (WeChat's retry)
    second = await scan(wechat, "oScan1", scene=checkin_codes.oa_scene(meeting["_id"]))
    assert second.startswith("已签到：三月主题党日，首次签到时间")
    stored = await reload(ctx, meeting)
    assert stored["counts"]["present"] == 1
    assert stored["attendance"][str(people[0]["_id"])]["how"] == "oa_qr"


async def test_an_unbound_scanner_gets_the_binding_link_and_nothing_is_recorded(ctx, town, wechat):
    await add_people(ctx, town, 1)
    meeting = await live_meeting(ctx, town)
    reply = await scan(wechat, "oNewcomer", scene=checkin_codes.oa_scene(meeting["_id"]))   # subscribe + qrscene_
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
    assert "这不是您所在党支部的会议" in await scan(wechat, "oStranger", scene=checkin_codes.oa_scene(meeting["_id"]))
    assert "签到尚未开始" in await scan(wechat, "oScan1", scene=checkin_codes.oa_scene(later["_id"]))
    assert "已取消" in await scan(wechat, "oScan1", scene=checkin_codes.oa_scene(cancelled["_id"]))
    assert "会议不存在" in await scan(wechat, "oScan1", scene="checkin:not-a-meeting")
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


async def test_mini_program_code_is_fetched_once_and_kept(ctx, town, wechat):
    await add_people(ctx, town, 1)
    meeting = await live_meeting(ctx, town)
    image = await checkin_codes.mp_code_png(ctx, meeting)
    assert image.startswith(b"\x89PNG")
    again = await checkin_codes.mp_code_png(ctx, await reload(ctx, meeting))
    assert again == image and wechat.calls("/wxa/getwxacodeunlimit") == 1
    printed = await checkin_codes.oa_qr_png(ctx, meeting)
    assert printed.startswith(b"\x89PNG")
