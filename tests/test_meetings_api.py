"""The phone's meeting API over real HTTP: lists, details, materials, leave, check-in, online."""

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
from wxbackend.errors import Conflict
from wxbackend.services import meetings
from wxbackend.services.accounts import mpsessions
from wxbackend.services.meetings import checkin, checkin_codes

API = "/api/v1/meetings"


@pytest.fixture
async def town(ctx):
    return await build_town(ctx)


async def phone(ctx, member, openid):
    """A bearer header of a member bound in the mini-program."""
    await bind(ctx, member, "mp", openid)
    token = await mpsessions.open_session(ctx, openid=openid, unionid=None, session_key="k",
                                          member_id=member["_id"])
    return {"Authorization": f"Bearer {token}"}


async def test_member_lists_reads_and_downloads(ctx, town, api):
    people = await add_people(ctx, town, 2)
    me = await phone(ctx, people[0], "oMp1")
    meeting = await live_meeting(ctx, town, online_link="https://meeting.example.org/j/1")
    pdf = b"%PDF-1.4\n" + b"x" * 70_000
    entry = await meetings.add_material(ctx, town.secretary, meeting["_id"], "学习 材料.pdf", pdf)
    upcoming = await api.get(API, headers=me)
    assert upcoming.status_code == 200, upcoming.text
    item = upcoming.json()["items"][0]
    assert item["id"] == str(meeting["_id"]) and item["status"] == "in_progress"
    assert item["status_label"] == "进行中" and item["type_label"] == "主题党日"
    detail = await api.get(f"{API}/{meeting['_id']}", headers=me)
    body = detail.json()
    assert body["can_check_in"] is True and body["counts"]["expected"] == 2
    assert body["online_link"] == "https://meeting.example.org/j/1"
    url = body["materials"][0]["url"]
    assert url.endswith(str(entry["file_id"]))
    download = await api.get(url, headers=me)
    assert download.status_code == 200 and download.content == pdf
    assert download.headers["content-type"] == "application/pdf"
    assert "filename*=UTF-8''%E5%AD%A6" in download.headers["content-disposition"]
    assert (await api.get(f"{API}?when=past", headers=me)).json()["items"] == []


async def test_another_branch_cannot_read_a_meeting_or_its_materials(ctx, town, api):
    await add_people(ctx, town, 1)
    stranger = (await add_people(ctx, town, 1, other=True))[0]
    them = await phone(ctx, stranger, "oMpStranger")
    meeting = await live_meeting(ctx, town)
    entry = await meetings.add_material(ctx, town.secretary, meeting["_id"], "a.txt", "内部材料".encode())
    for url in (f"{API}/{meeting['_id']}", f"{API}/{meeting['_id']}/materials/{entry['file_id']}"):
        answer = await api.get(url, headers=them)
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "out_of_scope", url
    for scan in ({}, {"scene": checkin_codes.mp_scene(meeting)}):  # even with the printed code in hand
        answer = await api.post(f"{API}/{meeting['_id']}/checkin", headers=them, json=scan)
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "out_of_scope"
    assert (await api.get(API, headers=them)).json()["items"] == []
    assert (await reload(ctx, meeting))["attendance"] == {}


async def test_check_in_by_code_twice_and_by_retry(ctx, town, api):
    people = await add_people(ctx, town, 1)
    me = await phone(ctx, people[0], "oMp1")
    meeting = await live_meeting(ctx, town)
    url = f"{API}/{meeting['_id']}/checkin"
    scan = {"method": "mp_code", "scene": checkin_codes.mp_scene(meeting)}
    first = await api.post(url, headers={**me, "Idempotency-Key": "scan-7"}, json=scan)
    assert first.status_code == 200, first.text
    assert first.json()["code"] == "checked_in" and first.json()["message"].startswith("签到成功")
    retry = await api.post(url, headers={**me, "Idempotency-Key": "scan-7"}, json=scan)
    assert retry.json() == first.json()
    again = await api.post(url, headers=me, json={**scan, "nonce": "scan-8"})
    assert again.json()["code"] == "already_checked_in" and again.json()["at"] == first.json()["at"]
    assert again.json()["message"].startswith("已签到")
    assert (await reload(ctx, meeting))["counts"]["present"] == 1


async def test_rotating_code_through_the_api(ctx, town, api):
    people = await add_people(ctx, town, 2)
    me, other = await phone(ctx, people[0], "oMp1"), await phone(ctx, people[1], "oMp2")
    meeting = await live_meeting(ctx, town)
    url = f"{API}/{meeting['_id']}/checkin"
    token = checkin_codes.rotating_token(ctx, meeting["_id"])
    ok = await api.post(url, headers=me, json={"method": "rotating", "token": token})
    assert ok.json()["code"] == "checked_in" and ok.json()["how"] == "rotating"
    old = checkin_codes.rotating_token(ctx, meeting["_id"], ctx.clock.now() - timedelta(minutes=5))
    for bad, code in ((old, "checkin_token_expired"), (token[:-3] + "xyz", "checkin_token_invalid"),
                      (None, "checkin_token_invalid")):
        answer = await api.post(url, headers=other, json={"method": "rotating", "token": bad})
        assert answer.status_code == 422 and answer.json()["error"]["code"] == code
    assert (await reload(ctx, meeting))["counts"]["present"] == 1


async def test_unbound_or_anonymous_users_are_refused(ctx, town, api):
    await add_people(ctx, town, 1)
    meeting = await live_meeting(ctx, town)
    token = await mpsessions.open_session(ctx, openid="oNobody", unionid=None, session_key="k", member_id=None)
    url = f"{API}/{meeting['_id']}/checkin"
    answer = await api.post(url, headers={"Authorization": f"Bearer {token}"}, json={})
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "not_bound"
    assert (await api.post(url, json={})).status_code == 401
    assert (await reload(ctx, meeting))["attendance"] == {}


async def test_leave_and_online_attendance(ctx, town, api):
    people = await add_people(ctx, town, 2)
    me, other = await phone(ctx, people[0], "oMp1"), await phone(ctx, people[1], "oMp2")
    future = await planned_meeting(ctx, town, ctx.clock.now() + timedelta(days=1),
                                   online_link="https://meeting.example.org/j/0")
    leave = await api.post(f"{API}/{future['_id']}/leave", headers=me, json={"reason": "出差"})
    assert leave.status_code == 200 and leave.json()["status"] == "pending"
    empty = await api.post(f"{API}/{future['_id']}/leave", headers=me, json={"reason": ""})
    assert empty.status_code == 400
    await meetings.decide_leave(ctx, town.secretary, future["_id"], people[0]["_id"], True)
    listed = (await api.get(API, headers=me)).json()["items"]
    assert listed[0]["my_state"] == "excused" and listed[0]["my_state_label"] == "请假（已批准）"
    early = await api.post(f"{API}/{future['_id']}/online", headers=other)
    assert early.status_code == 422 and early.json()["error"]["code"] == "meeting_not_in_progress"
    live = await live_meeting(ctx, town, online_link="https://meeting.example.org/j/2")
    joined = await api.post(f"{API}/{live['_id']}/online", headers=other)
    assert joined.json()["recorded"] is True and joined.json()["online_link"].endswith("/j/2")
    assert (await reload(ctx, live))["counts"]["online"] == 1


async def test_past_meetings_page_by_cursor(ctx, town, api):
    from tests.meetings_helpers import past_meeting

    people = await add_people(ctx, town, 1)
    me = await phone(ctx, people[0], "oMp1")
    olds = [await past_meeting(ctx, town, days, people) for days in (3, 5, 9)]
    first = (await api.get(f"{API}?when=past&limit=2", headers=me)).json()
    assert [i["id"] for i in first["items"]] == [str(olds[0]["_id"]), str(olds[1]["_id"])]
    second = (await api.get(f"{API}?when=past&limit=2&cursor={first['next_cursor']}", headers=me)).json()
    assert [i["id"] for i in second["items"]] == [str(olds[2]["_id"])] and second["next_cursor"] is None


async def test_a_member_withdraws_leave_before_the_start(ctx, town, api):
    people = await add_people(ctx, town, 2)
    me, other = await phone(ctx, people[0], "oMp1"), await phone(ctx, people[1], "oMp2")
    future = await planned_meeting(ctx, town, ctx.clock.now() + timedelta(days=1))
    url = f"{API}/{future['_id']}/leave"
    assert (await api.delete(url, headers=me)).json()["error"]["code"] == "leave_not_found"
    await api.post(url, headers=me, json={"reason": "出差"})
    withdrawn = await api.delete(url, headers=me)
    assert withdrawn.status_code == 200 and withdrawn.json()["status"] == "withdrawn"
    assert withdrawn.json()["status_label"] == "已撤回"
    again = await api.delete(url, headers=me)  # a double tap: the same answer, nothing moves
    assert again.status_code == 200 and again.json() == withdrawn.json()
    listed = (await api.get(API, headers=me)).json()["items"]
    assert listed[0]["my_state"] is None

    # Asked again and approved, then withdrawn: no longer counted as excused.
    assert (await api.post(url, headers=me, json={"reason": "出差改期"})).json()["status"] == "pending"
    await meetings.decide_leave(ctx, town.secretary, future["_id"], people[0]["_id"], True)
    assert (await reload(ctx, future))["counts"]["excused"] == 1
    assert (await api.delete(url, headers=me)).json()["status"] == "withdrawn"
    stored = await reload(ctx, future)
    assert stored["counts"]["excused"] == 0 and str(people[0]["_id"]) not in stored["attendance"]
    # The secretary can no longer decide it; the other member has nothing to withdraw.
    with pytest.raises(Conflict) as refused:
        await meetings.decide_leave(ctx, town.secretary, future["_id"], people[0]["_id"], True)
    assert refused.value.code == "leave_not_pending"
    assert (await api.delete(url, headers=other)).status_code == 404


async def test_leave_cannot_be_withdrawn_once_the_meeting_started_or_after_a_check_in(ctx, town, api):
    people = await add_people(ctx, town, 2)
    me = await phone(ctx, people[0], "oMp1")
    live = await live_meeting(ctx, town)
    soon = ctx.clock.now() + timedelta(minutes=20)
    future = await planned_meeting(ctx, town, soon)
    await meetings.request_leave(ctx, people[0], future["_id"], "出差")
    await meetings.decide_leave(ctx, town.secretary, future["_id"], people[0]["_id"], True)
    await checkin.check_in(ctx, future["_id"], people[0], "mp_code", now=soon - timedelta(minutes=10),
                           proof=checkin.Proof(secret=future["checkin_secret"]))  # came after all
    late = await api.delete(f"{API}/{future['_id']}/leave", headers=me)
    assert late.status_code == 409 and late.json()["error"]["code"] == "leave_not_withdrawable"
    before = await reload(ctx, future)
    assert before["attendance"][str(people[0]["_id"])]["status"] == "present"
    await ctx.db.meetings.update_one({"_id": live["_id"]}, {"$set": {
        f"leave.{people[0]['_id']}": {"reason": "病假", "status": "pending",
                                      "at": ctx.clock.now(), "name": "x"}}})
    started = await api.delete(f"{API}/{live['_id']}/leave", headers=me)
    assert started.status_code == 422 and started.json()["error"]["code"] == "leave_too_late"
    assert (await reload(ctx, live))["leave"][str(people[0]["_id"])]["status"] == "pending"


async def test_the_api_document_says_what_each_check_in_way_needs(api):
    paths = (await api.get("/api/v1/openapi.json")).json()["paths"]
    for path in (f"{API}/checkin", f"{API}/{{meeting_id}}/checkin"):
        text = paths[path]["post"]["description"]
        for needed in ('{"token"', '{"scene"', "location", "gcj02", "checkin_proof_required",
                       "checkin_rotating_only", "checkin_code_invalid", "checkin_too_far", "公众号签到二维码"):
            assert needed in text, (path, needed)
    online = paths[f"{API}/{{meeting_id}}/online"]["post"]["description"]
    assert "meeting_not_online" in online and "meeting_not_in_progress" in online
