"""Meetings: planning, publication with notices, the state machine, minutes, leave, materials."""

from datetime import UTC, datetime, timedelta

import pytest

from models import meetings as meetings_model
from tests.meetings_helpers import (
    add_people,
    bind,
    build_town,
    live_meeting,
    notices,
    past_meeting,
    plan_fields,
    planned_meeting,
    reload,
)
from wxbackend.errors import Conflict, DomainError, Forbidden, InvalidInput
from wxbackend.services import meetings
from wxbackend.services.meetings import meeting_notices, reminders


@pytest.fixture
async def town(ctx):
    return await build_town(ctx)


async def test_create_validates_each_field_and_stores_nothing(ctx, town):
    bad = plan_fields(ctx.clock.now(), title="", type="party", online_link="ftp://x")
    bad["end"] = bad["start"] - timedelta(hours=1)
    with pytest.raises(InvalidInput) as err:
        await meetings.create(ctx, town.secretary, town.branch["_id"], bad)
    fields = {d["field"] for d in err.value.details}
    assert fields == {"title", "type", "online_link", "end"}
    assert await ctx.db.meetings.count_documents({"org_id": town.branch["_id"]}) == 0


async def test_only_the_branchs_own_secretary_plans_its_meetings(ctx, town):
    with pytest.raises(Forbidden):
        await meetings.create(ctx, town.secretary, town.other["_id"],
                              plan_fields(ctx.clock.now()))
    with pytest.raises(DomainError) as err:
        await meetings.create(ctx, town.district_admin, town.district["_id"],
                              plan_fields(ctx.clock.now()))
    assert err.value.code == "not_a_branch"


async def test_publish_materialises_attendees_and_notifies_each(ctx, town, sandbox):
    people = await add_people(ctx, town, 3)
    stranger = (await add_people(ctx, town, 1, other=True, prefix="外支部"))[0]
    await sandbox.follow("oFollower1")
    await bind(ctx, people[0], "oa", "oFollower1")
    await bind(ctx, people[1], "mp", "oMiniGranted")
    await sandbox.http.post("/sandbox/mp/users/oMiniGranted/grant-subscribe",
                            json={"template_id": ctx.settings.meetings.mp_template_id})
    start = ctx.clock.now() + timedelta(days=2)
    meeting = await planned_meeting(ctx, town, start)
    assert meeting["status"] == "planned" and meeting["expected_count"] == 3
    assert set(meeting["expected"]) == {p["_id"] for p in people}
    got = await notices(ctx, [*people, stranger])
    assert got["党员1"] == got["党员2"] == ["meeting_published"]
    assert got["外支部1"] == []
    with pytest.raises(Conflict):
        await meetings.publish(ctx, town.secretary, meeting["_id"])
    assert (await notices(ctx, people))["党员1"] == ["meeting_published"]


def test_a_notice_says_topic_time_and_place():
    start = datetime(2026, 3, 5, 7, 0, tzinfo=UTC)
    meeting = {"_id": "m1", "title": "三月主题党日", "type": "theme_day", "topic": "学习党章",
               "place": "党员活动室", "start": start, "end": start + timedelta(hours=2)}
    data = meeting_notices.notice_data(meeting, "meeting_changed")
    assert data["time"] == "2026-03-05 15:00-17:00" and data["place"] == "党员活动室"
    assert data["topic"] == "学习党章" and data["subject"] == "会议变更通知" and data["type"] == "主题党日"
    online = meeting_notices.notice_data({**meeting, "place": "", "online_link": "https://x"}, "meeting_reminder")
    assert online["place"] == "线上会议"


async def test_time_change_and_cancellation_notify_again(ctx, town, sandbox):
    people = await add_people(ctx, town, 2)
    await sandbox.follow("oF1")
    await bind(ctx, people[0], "oa", "oF1")
    meeting = await planned_meeting(ctx, town, ctx.clock.now() + timedelta(days=1))
    actor = town.secretary
    later = plan_fields(meeting["start"] + timedelta(hours=2))
    moved = await meetings.update(ctx, actor, meeting["_id"], later)
    assert moved["start"] == later["start"].replace(microsecond=0)
    retitled = await meetings.update(ctx, actor, meeting["_id"], {**later, "agenda": "一、学习"})
    assert retitled["agenda"] == "一、学习"     # no notice: time and place unchanged
    await meetings.cancel(ctx, actor, meeting["_id"], "上级会议冲突")
    got = await notices(ctx, people)
    assert got["党员1"] == ["meeting_published", "meeting_changed", "meeting_cancelled"]
    with pytest.raises(Conflict):
        await meetings.update(ctx, actor, meeting["_id"], later)


async def test_reminder_goes_out_once_before_the_start(ctx, town, sandbox, clock):
    people = await add_people(ctx, town, 1)
    await sandbox.follow("oF1")
    await bind(ctx, people[0], "oa", "oF1")
    await planned_meeting(ctx, town, ctx.clock.now() + timedelta(hours=3))
    await planned_meeting(ctx, town, ctx.clock.now() + timedelta(hours=5))   # not yet due
    assert await reminders.send_due_reminders(ctx) == 0
    clock.advance(timedelta(hours=2, minutes=1))     # the first one's reminder (60 min) has come
    assert await reminders.send_due_reminders(ctx) == 1
    assert await reminders.send_due_reminders(ctx) == 0
    got = await notices(ctx, people)
    assert got["党员1"].count("meeting_reminder") == 1 and got["党员1"].count("meeting_published") == 2


async def test_state_machine_moves_by_conditional_updates(ctx, town):
    await add_people(ctx, town, 2)
    actor = town.secretary
    future = await planned_meeting(ctx, town, ctx.clock.now() + timedelta(days=1))
    with pytest.raises(DomainError) as err:
        await meetings.finish(ctx, actor, future["_id"])
    assert err.value.code == "meeting_not_started"
    meeting = await live_meeting(ctx, town)
    assert meetings.display_status(meeting, ctx.clock.now()) == "in_progress"
    started = await meetings.start(ctx, actor, meeting["_id"])
    assert started["status"] == "in_progress"
    with pytest.raises(Conflict):
        await meetings.start(ctx, actor, meeting["_id"])
    finished = await meetings.finish(ctx, actor, meeting["_id"])
    assert finished["status"] == "finished" and finished["finished_at"]
    with pytest.raises(Conflict):
        await meetings.finish(ctx, actor, meeting["_id"])
    actions = [a["action"] async for a in ctx.db.audit_log.find({"target.id": meeting["_id"]})]
    assert actions.count("meeting.finish") == 1


async def test_the_minute_job_moves_started_meetings(ctx, town):
    await add_people(ctx, town, 1)
    meeting = await live_meeting(ctx, town)
    await planned_meeting(ctx, town, ctx.clock.now() + timedelta(days=1))
    assert await meetings.every_minute(ctx) == {"started": 1, "reminded": 0}
    assert (await reload(ctx, meeting))["status"] == "in_progress"
    assert await meetings.start_due(ctx) == 0


async def test_minutes_confirmed_are_read_only_except_by_audited_amendment(ctx, town):
    await add_people(ctx, town, 1)
    actor = town.secretary
    meeting = await live_meeting(ctx, town)
    await meetings.record_minutes(ctx, actor, meeting["_id"], "第一稿")
    with pytest.raises(Conflict):
        await meetings.confirm_minutes(ctx, actor, meeting["_id"])   # not finished yet
    await meetings.finish(ctx, actor, meeting["_id"])
    await meetings.record_minutes(ctx, actor, meeting["_id"], "定稿")
    confirmed = await meetings.confirm_minutes(ctx, actor, meeting["_id"])
    assert confirmed["minutes"]["confirmed_by"] == "王书记"
    with pytest.raises(Conflict):
        await meetings.record_minutes(ctx, actor, meeting["_id"], "偷偷改")
    with pytest.raises(InvalidInput):
        await meetings.amend_minutes(ctx, actor, meeting["_id"], "补充", "")
    amended = await meetings.amend_minutes(ctx, actor, meeting["_id"], "定稿（补充发言）", "漏记发言")
    assert amended["minutes"]["text"] == "定稿"
    assert meetings.current_minutes(amended) == "定稿（补充发言）"
    entries = [a async for a in ctx.db.audit_log.find({"target.id": meeting["_id"]})]
    assert [a["details"]["reason"] for a in entries if a["action"] == "meeting.minutes_amend"] == ["漏记发言"]
    with pytest.raises(Forbidden):
        await meetings.amend_minutes(ctx, town.outsider, meeting["_id"], "x", "y")


async def test_leave_request_approval_counts_as_excused(ctx, town):
    people = await add_people(ctx, town, 3)
    actor = town.secretary
    meeting = await planned_meeting(ctx, town, ctx.clock.now() + timedelta(days=1))
    first = await meetings.request_leave(ctx, people[0], meeting["_id"], "出差")
    again = await meetings.request_leave(ctx, people[0], meeting["_id"], "出差")
    assert first["status"] == again["status"] == "pending"
    await meetings.request_leave(ctx, people[1], meeting["_id"], "生病")
    approved = await meetings.decide_leave(ctx, actor, meeting["_id"], people[0]["_id"], True)
    refused = await meetings.decide_leave(ctx, actor, meeting["_id"], people[1]["_id"], False)
    assert approved["status"] == "approved" and refused["status"] == "refused"
    with pytest.raises(Conflict):
        await meetings.decide_leave(ctx, actor, meeting["_id"], people[0]["_id"], True)
    stored = await meetings.with_marks(ctx, await reload(ctx, meeting))
    assert stored["counts"] == {"present": 0, "online": 0, "excused": 1}
    assert stored["attendance"][str(people[0]["_id"])]["how"] == "leave"
    assert meetings_model.absent_count(stored) == 2


async def test_leave_refused_after_the_start_and_outside_the_branch(ctx, town):
    people = await add_people(ctx, town, 1)
    stranger = (await add_people(ctx, town, 1, other=True))[0]
    meeting = await live_meeting(ctx, town)
    with pytest.raises(DomainError) as err:
        await meetings.request_leave(ctx, people[0], meeting["_id"], "出差")
    assert err.value.code == "leave_too_late"
    future = await planned_meeting(ctx, town, ctx.clock.now() + timedelta(days=1))
    with pytest.raises(Forbidden) as err:
        await meetings.request_leave(ctx, stranger, future["_id"], "出差")
    assert err.value.code == "out_of_scope"
    assert (await reload(ctx, future))["leave"] == {}


async def test_materials_are_type_and_size_checked(ctx, town):
    await add_people(ctx, town, 1)
    actor = town.secretary
    meeting = await planned_meeting(ctx, town, ctx.clock.now() + timedelta(days=1))
    pdf = b"%PDF-1.4\n" + b"x" * 100
    entry = await meetings.add_material(ctx, actor, meeting["_id"], "学习材料.pdf", pdf)
    stored = await reload(ctx, meeting)
    entry_back, stream = await meetings.open_material(ctx, stored, entry["file_id"])
    assert entry_back["name"] == "学习材料.pdf" and await stream.read() == pdf
    ctx.settings.meetings.material_max_bytes = 1000
    cases = [("big.pdf", b"%PDF-" + b"x" * 2000, "material_too_large"),
             ("evil.exe", b"MZ\x90\x00", "material_type_not_allowed"),
             ("fake.pdf", b"<html></html>", "material_type_mismatch"),
             ("noext", b"%PDF-", "material_type_not_allowed")]
    for name, data, code in cases:
        with pytest.raises(DomainError) as err:
            await meetings.add_material(ctx, actor, meeting["_id"], name, data)
        assert err.value.code == code, name
    assert len((await reload(ctx, meeting))["materials"]) == 1
    assert len([f async for f in ctx.db["materials.files"].find({"filename": {"$gte": ""}})]) == 1
    await meetings.remove_material(ctx, actor, meeting["_id"], entry["file_id"])
    assert (await reload(ctx, meeting))["materials"] == []
    assert await meetings_model.open_file(ctx.db, entry["file_id"]) is None


async def test_material_count_is_capped(ctx, town):
    await add_people(ctx, town, 1)
    actor = town.secretary
    ctx.settings.meetings.material_max_count = 2
    meeting = await planned_meeting(ctx, town, ctx.clock.now() + timedelta(days=1))
    for i in range(2):
        await meetings.add_material(ctx, actor, meeting["_id"], f"{i}.txt", "材料".encode())
    with pytest.raises(Conflict):
        await meetings.add_material(ctx, actor, meeting["_id"], "3.txt", b"x")
    assert len((await reload(ctx, meeting))["materials"]) == 2


async def test_members_see_their_upcoming_and_past_meetings(ctx, town):
    people = await add_people(ctx, town, 2)
    actor = town.secretary
    now = ctx.clock.now()
    soon = await planned_meeting(ctx, town, now + timedelta(days=1))
    live = await live_meeting(ctx, town)
    past = await past_meeting(ctx, town, 3, people)
    only_first = await planned_meeting(ctx, town, now + timedelta(days=2), audience="list",
                                       member_ids=[str(people[0]["_id"])])
    await meetings.create(ctx, actor, town.branch["_id"], plan_fields(now + timedelta(days=3)))  # draft
    upcoming = await meetings.member_meetings(ctx, people[1], "upcoming")
    assert [m["_id"] for m in upcoming] == [live["_id"], soon["_id"]]
    first = await meetings.member_meetings(ctx, people[0], "upcoming")
    assert only_first["_id"] in [m["_id"] for m in first]
    assert [m["_id"] for m in await meetings.member_meetings(ctx, people[1], "past")] == [past["_id"]]
