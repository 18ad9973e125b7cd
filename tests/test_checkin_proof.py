"""Check-in needs proof of being there (security review, hole 3): each attack refused, nothing recorded.

Before the fix, ``POST /api/v1/meetings/<id>/checkin`` with ``{}`` (the meeting id
from the member's own list) checked in from anywhere, the official account's
scene was ``checkin:<id>``, and ``POST .../online`` recorded attendance at a
meeting with no online link; any of them then let the member comment and vote.
Each test here reproduces one way and asserts the coded refusal, no mark, no
count, and that comments and votes stay closed.
"""

from datetime import timedelta

import pytest

from tests.meetings_helpers import (
    add_people,
    bind,
    build_town,
    live_meeting,
    make_codes,
    plan_fields,
    planned_meeting,
    reload,
)
from wxbackend.errors import DomainError
from wxbackend.services import meetings
from wxbackend.services.accounts import mpsessions
from wxbackend.services.meetings import checkin, checkin_codes, comments, printed_codes, votes

API = "/api/v1/meetings"
# The meeting place (a district office in Xiamen, GCJ-02) and points near and far from it.
PLACE = (24.479834, 118.089425)
NEAR = {"latitude": 24.480600, "longitude": 118.089900}     # ~100 m
FAR = {"latitude": 24.520000, "longitude": 118.089425}      # ~4.5 km


@pytest.fixture
async def town(ctx):
    return await build_town(ctx)


@pytest.fixture
async def wechat(sandbox, server_url):
    sandbox.config.callback_url = server_url + "/wechat/oa"
    return sandbox


async def phone(ctx, member, openid):
    await bind(ctx, member, "mp", openid)
    token = await mpsessions.open_session(ctx, openid=openid, unionid=None, session_key="k",
                                          member_id=member["_id"])
    return {"Authorization": f"Bearer {token}"}


async def oa_member(ctx, wechat, member, openid):
    await wechat.follow(openid)
    await bind(ctx, member, "oa", openid)


async def scan(wechat, openid, scene):
    answer = (await wechat.http.post(f"/sandbox/users/{openid}/scan", json={"scene": scene})).json()
    assert answer["error"] is None, answer
    return answer["reply"]["Content"]


def refused(answer, code, status=422):
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code, answer.text


async def nothing_recorded(ctx, meeting, member, town):
    """No mark, no count, and the member may neither comment nor vote."""
    stored = await reload(ctx, meeting)
    assert stored["attendance"] == {} and stored["counts"] == {"present": 0, "online": 0, "excused": 0}
    vote = await votes.create(ctx, town.secretary, meeting["_id"], "是否通过", ["同意", "不同意"])
    for attempt in (comments.post(ctx, member, meeting["_id"], "到会心得"), votes.cast(ctx, member, vote["_id"], [0])):
        with pytest.raises(DomainError) as err:
            await attempt
        assert err.value.code == "not_attendee"


async def test_the_meeting_id_alone_checks_no_one_in(ctx, town, api):
    people = await add_people(ctx, town, 1)
    me = await phone(ctx, people[0], "oMp1")
    meeting = await live_meeting(ctx, town)
    for body in ({}, {"method": "mp_code"}, {"method": "mp_code", "nonce": "n1"}):
        refused(await api.post(f"{API}/{meeting['_id']}/checkin", headers=me, json=body), "checkin_proof_required")
    refused(await api.post(f"{API}/checkin", headers=me, json={}), "checkin_proof_required")
    refused(await api.post(f"{API}/{meeting['_id']}/checkin", headers=me, json={"method": "rotating"}),
            "checkin_token_invalid")
    await nothing_recorded(ctx, meeting, people[0], town)


def one_character_off(secret: str) -> str:
    return secret[:-1] + ("x" if secret[-1] != "x" else "y")


async def test_codes_made_from_the_id_or_guessed_are_refused(ctx, town, api):
    people = await add_people(ctx, town, 1)
    me = await phone(ctx, people[0], "oMp1")
    meeting = await live_meeting(ctx, town)
    other = await live_meeting(ctx, town)
    mid = meeting["_id"]
    guesses = [f"m={mid}",                                      # the mini-program code before the fix
               f"checkin:{mid}",                                # the official-account scene before it
               checkin_codes.compact_id(mid) + "A" * 16,        # the id with a made-up secret
               checkin_codes.compact_id(mid) + one_character_off(meeting["checkin_secret"]),
               checkin_codes.mp_scene({**meeting, "checkin_secret": other["checkin_secret"]})]
    for scene in guesses:
        for url in (f"{API}/{mid}/checkin", f"{API}/checkin"):
            refused(await api.post(url, headers=me, json={"scene": scene}), "checkin_code_invalid")
    # Another meeting's genuine code does not check in here; its token neither.
    refused(await api.post(f"{API}/{mid}/checkin", headers=me, json={"scene": checkin_codes.mp_scene(other)}),
            "checkin_code_invalid")
    token = checkin_codes.rotating_token(ctx, other["_id"])
    refused(await api.post(f"{API}/{mid}/checkin", headers=me, json={"token": token}), "checkin_token_invalid")
    await nothing_recorded(ctx, meeting, people[0], town)
    assert (await reload(ctx, other))["attendance"] == {}


async def test_official_account_scenes_without_the_secret_are_refused(ctx, town, wechat):
    people = await add_people(ctx, town, 1)
    await oa_member(ctx, wechat, people[0], "oScan1")
    meeting = await live_meeting(ctx, town)
    for scene in (f"checkin:{meeting['_id']}", f"checkin:{meeting['_id']}.{'B' * 16}", f"checkin:{meeting['_id']}."):
        reply = await scan(wechat, "oScan1", scene)
        assert reply.startswith("签到未成功：签到码无效或已更换"), reply
    await nothing_recorded(ctx, meeting, people[0], town)


async def test_online_attendance_needs_a_link_and_the_meeting_under_way(ctx, town, api):
    people = await add_people(ctx, town, 1)
    me = await phone(ctx, people[0], "oMp1")
    plain = await live_meeting(ctx, town)
    refused(await api.post(f"{API}/{plain['_id']}/online", headers=me), "meeting_not_online")
    await nothing_recorded(ctx, plain, people[0], town)
    link = "https://meeting.example.org/j/9"
    later = await planned_meeting(ctx, town, ctx.clock.now() + timedelta(hours=2), online_link=link)
    refused(await api.post(f"{API}/{later['_id']}/online", headers=me), "meeting_not_in_progress")
    online = await live_meeting(ctx, town, online_link=link)
    ctx.clock.advance(timedelta(hours=2))          # the meeting (80 more minutes) is over
    refused(await api.post(f"{API}/{online['_id']}/online", headers=me), "meeting_not_in_progress")
    for m in (later, online):
        stored = await reload(ctx, m)
        assert stored["attendance"] == {} and stored["counts"]["online"] == 0


async def test_rotating_only_meetings_refuse_the_printed_codes(ctx, town, api, wechat):
    people = await add_people(ctx, town, 2)
    me = await phone(ctx, people[0], "oMp1")
    await oa_member(ctx, wechat, people[1], "oScan1")
    meeting = await live_meeting(ctx, town, rotating_only=True)
    refused(await api.post(f"{API}/checkin", headers=me, json={"scene": checkin_codes.mp_scene(meeting)}),
            "checkin_rotating_only")
    reply = await scan(wechat, "oScan1", checkin_codes.oa_scene(meeting))
    assert "只接受会场屏幕上的动态签到码" in reply
    await nothing_recorded(ctx, meeting, people[0], town)
    detail = (await api.get(f"{API}/{meeting['_id']}", headers=me)).json()
    assert detail["checkin_rotating_only"] is True
    token = checkin_codes.rotating_token(ctx, meeting["_id"])
    ok = await api.post(f"{API}/checkin", headers=me, json={"token": token})
    assert ok.json()["code"] == "checked_in" and ok.json()["how"] == "rotating"


async def test_meetings_with_coordinates_want_the_phone_nearby(ctx, town, api, wechat):
    people = await add_people(ctx, town, 2)
    me = await phone(ctx, people[0], "oMp1")
    await oa_member(ctx, wechat, people[1], "oScan1")
    meeting = await live_meeting(ctx, town, latitude=str(PLACE[0]), longitude=str(PLACE[1]))
    assert meeting["geo"] == {"lat": PLACE[0], "lng": PLACE[1]}
    scan_body = {"scene": checkin_codes.mp_scene(meeting)}
    refused(await api.post(f"{API}/checkin", headers=me, json=scan_body), "checkin_location_required")
    refused(await api.post(f"{API}/checkin", headers=me, json={**scan_body, "location": FAR}), "checkin_too_far")
    token = checkin_codes.rotating_token(ctx, meeting["_id"])
    refused(await api.post(f"{API}/checkin", headers=me, json={"token": token, "location": FAR}), "checkin_too_far")
    reply = await scan(wechat, "oScan1", checkin_codes.oa_scene(meeting))
    assert "本次会议需定位签到" in reply
    await nothing_recorded(ctx, meeting, people[0], town)
    assert (await api.get(f"{API}/{meeting['_id']}", headers=me)).json()["checkin_location_required"] is True
    ok = await api.post(f"{API}/checkin", headers=me, json={**scan_body, "location": NEAR})
    assert ok.status_code == 200 and ok.json()["code"] == "checked_in", ok.text


def test_distances_are_great_circle_metres():
    assert abs(checkin.distance_m((0.0, 0.0), (1.0, 0.0)) - 111_195) < 1
    assert 80 < checkin.distance_m(PLACE, (NEAR["latitude"], NEAR["longitude"])) < 120
    assert checkin.distance_m(PLACE, PLACE) == 0


async def test_renewed_codes_make_earlier_printouts_useless(ctx, town, api, wechat):
    people = await add_people(ctx, town, 2)
    me, other = await phone(ctx, people[0], "oMp1"), await phone(ctx, people[1], "oMp2")
    meeting = await make_codes(ctx, await live_meeting(ctx, town))
    leaked = checkin_codes.mp_scene(meeting)        # a photo of the printout, sent round
    await printed_codes.generate(ctx, town.secretary, meeting["_id"], renew=True)
    renewed = await reload(ctx, meeting)
    assert renewed["checkin_secret"] != meeting["checkin_secret"]
    assert renewed["qr"]["oa_ticket"] != meeting["qr"]["oa_ticket"]
    assert wechat.calls("/wxa/getwxacodeunlimit") == 2 and wechat.calls("/cgi-bin/qrcode/create") == 2
    refused(await api.post(f"{API}/checkin", headers=me, json={"scene": leaked}), "checkin_code_invalid")
    await nothing_recorded(ctx, meeting, people[0], town)
    ok = await api.post(f"{API}/checkin", headers=other, json={"scene": checkin_codes.mp_scene(renewed)})
    assert ok.json()["code"] == "checked_in"
    entries = await ctx.db.audit_log.find({"target.id": meeting["_id"]}).to_list()
    assert "meeting.checkin_codes_renew" in [e["action"] for e in entries]


async def test_no_member_answer_reveals_the_secret(ctx, town, api, wechat):
    people = await add_people(ctx, town, 1)
    me = await phone(ctx, people[0], "oMp1")
    meeting = await make_codes(ctx, await live_meeting(ctx, town))
    secret = meeting["checkin_secret"]
    answers = [await api.get(API, headers=me), await api.get(f"{API}/{meeting['_id']}", headers=me),
               await api.get(f"{API}/{meeting['_id']}/comments", headers=me),
               await api.get(f"{API}/{meeting['_id']}/votes", headers=me)]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert secret not in answer.text and meeting["qr"]["oa_ticket"] not in answer.text
        assert "weixin.qq.com/q/" not in answer.text


async def test_a_draft_gets_no_codes(ctx, town, wechat):
    draft = await meetings.create(ctx, town.secretary, town.branch["_id"],
                                  plan_fields(ctx.clock.now() + timedelta(days=1)))
    for attempt in (printed_codes.generate(ctx, town.secretary, draft["_id"]),
                    printed_codes.image(ctx, town.secretary, draft["_id"], "mp")):
        with pytest.raises(DomainError) as err:
            await attempt
        assert err.value.code == "meeting_not_published"
    assert await printed_codes.make_codes(ctx, str(draft["_id"])) == "skipped"
    assert (await reload(ctx, draft))["qr"] == {} and wechat.calls("/wxa/getwxacodeunlimit") == 0
