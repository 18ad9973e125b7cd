"""Planning rules from issue #13 item 6: types a branch can hold, chosen attendees of the branch,
meetings already over (补录), no reminder right after the notice, none to those already in."""

from datetime import date, timedelta

import pytest

from models import meetings as meetings_model
from tests.factories import member_fields
from tests.meetings_helpers import (
    SYSTEM,
    add_people,
    build_town,
    notices,
    plan_fields,
    planned_meeting,
    reload,
)
from wxbackend import jobs
from wxbackend.errors import DomainError, InvalidInput
from wxbackend.services import meetings, orgs
from wxbackend.services.meetings import audience, checkin, printed_codes, reminders
from wxbackend.services.meetings.rules import secretary_actions
from wxbackend.services.orgs import members


@pytest.fixture
async def town(ctx):
    return await build_town(ctx)


def just_now(ctx, instant):
    """Written by the step that just ran (the test clock runs; MongoDB keeps milliseconds)."""
    return instant is not None and timedelta(0) <= ctx.clock.now() - instant < timedelta(seconds=5)


async def stored_count(ctx, town):
    return await ctx.db.meetings.count_documents({"org_id": town.branch["_id"]})


# -- c. types the branch can hold -------------------------------------------------------

async def test_a_branch_without_a_committee_cannot_plan_a_committee_meeting(ctx, town):
    people = await add_people(ctx, town, 3)
    branch = await orgs.get(ctx, town.branch["_id"])
    assert "committee" not in audience.allowed_types(ctx, branch)
    assert "group" not in audience.allowed_types(ctx, branch)      # no 党小组 either
    for meeting_type in ("committee", "group"):
        with pytest.raises(InvalidInput) as err:
            await meetings.create(ctx, town.secretary, town.branch["_id"],
                                  plan_fields(ctx.clock.now() + timedelta(days=1), type=meeting_type))
        assert err.value.code == "type_not_allowed" and err.value.details[0]["field"] == "type"
    assert await stored_count(ctx, town) == 0

    # A committee recorded: the branch holds 支委会 (and may invite the committee).
    await orgs.set_leadership(ctx, SYSTEM, town.branch["_id"], secretary_id=people[0]["_id"],
                              committee=[(people[1]["_id"], "组织委员"), (people[2]["_id"], "宣传委员")])
    branch = await orgs.get(ctx, town.branch["_id"])
    assert audience.has_committee(ctx, branch) and "committee" in audience.allowed_types(ctx, branch)
    made = await meetings.create(ctx, town.secretary, town.branch["_id"],
                                 plan_fields(ctx.clock.now() + timedelta(days=1), type="committee",
                                             audience="committee"))
    assert made["type"] == "committee"


async def test_seven_full_members_make_a_committee_branch(ctx, town):
    await add_people(ctx, town, 7)
    branch = await orgs.get(ctx, town.branch["_id"])
    assert branch["full_member_count"] == 7 and not branch["committee"]
    assert "committee" in audience.allowed_types(ctx, branch)
    ctx.settings.meetings.compliance_committee_min_full = 8
    assert "committee" not in audience.allowed_types(ctx, branch)


# -- a. chosen attendees are members of the branch ----------------------------------------

async def test_chosen_attendees_must_be_current_members_of_the_branch(ctx, town):
    ours = await add_people(ctx, town, 2)
    stranger = (await add_people(ctx, town, 1, other=True, prefix="外支部"))[0]
    fields = plan_fields(ctx.clock.now() + timedelta(days=1), audience="list")
    with pytest.raises(InvalidInput) as err:
        await meetings.create(ctx, town.secretary, town.branch["_id"],
                              {**fields, "member_ids": [str(ours[0]["_id"]), str(stranger["_id"])]})
    assert err.value.code == "member_not_in_branch" and "不是本支部的在册党员" in err.value.message
    assert await stored_count(ctx, town) == 0
    made = await meetings.create(ctx, town.secretary, town.branch["_id"],
                                 {**fields, "member_ids": [str(ours[1]["_id"])]})
    with pytest.raises(InvalidInput):
        await meetings.update(ctx, town.secretary, made["_id"], {**fields, "member_ids": [str(stranger["_id"])]})
    assert (await reload(ctx, made))["audience"]["member_ids"] == [ours[1]["_id"]]


async def test_the_picker_lists_the_branch_by_name_and_tells_namesakes_apart(ctx, town):
    older = await members.create(ctx, SYSTEM, town.branch["_id"], member_fields("王芳"))
    younger = await members.create(ctx, SYSTEM, town.branch["_id"], member_fields(
        "王芳", birth=date(1996, 5, 1), party_status="预备党员", joined_on="2025-07-01", full_on=""))
    await add_people(ctx, town, 1, other=True, prefix="外支部")
    branch = await orgs.get(ctx, town.branch["_id"])
    picker = await audience.member_picker(ctx, branch, [str(younger["_id"])])
    assert not picker.searching
    assert [(c.name, c.hint, c.picked) for c in sorted(picker.choices, key=lambda c: c.hint)] == [
        ("王芳", "1985年生 · 正式党员", False), ("王芳", "1996年生 · 预备党员", True)]
    assert {c.id for c in picker.choices} == {str(older["_id"]), str(younger["_id"])}


# -- e. meetings already over: a record (补录) once confirmed, never a notice -----------

async def test_a_past_meeting_is_saved_only_when_confirmed_and_published_silently(ctx, town, sandbox):
    people = await add_people(ctx, town, 2)
    past = plan_fields(ctx.clock.now() - timedelta(days=2))
    with pytest.raises(InvalidInput) as err:
        await meetings.create(ctx, town.secretary, town.branch["_id"], past)
    assert err.value.code == "meeting_in_past" and err.value.details[0]["field"] == "confirm_past"
    assert await stored_count(ctx, town) == 0
    draft = await meetings.create(ctx, town.secretary, town.branch["_id"], {**past, "confirm_past": True})
    # Re-saving with the same (confirmed) times asks nothing again; other past times do.
    await meetings.update(ctx, town.secretary, draft["_id"], {**past, "agenda": "补记议程"})
    with pytest.raises(InvalidInput):
        await meetings.update(ctx, town.secretary, draft["_id"], plan_fields(ctx.clock.now() - timedelta(days=3)))

    with pytest.raises(DomainError) as err:
        await meetings.publish(ctx, town.secretary, draft["_id"])
    assert err.value.code == "meeting_in_past"
    assert (await reload(ctx, draft))["status"] == "draft"
    published = await meetings.publish(ctx, town.secretary, draft["_id"], confirm_past=True)
    assert published["status"] == "planned" and published["backfilled"] is True
    assert published["expected_count"] == 2 and just_now(ctx, published["reminded_at"])
    assert await notices(ctx, people) == {"党员1": [], "党员2": []}
    # No check-in codes were queued for it (queuing the job now is its first time).
    assert await jobs.enqueue(ctx, "meeting_checkin_codes", str(draft["_id"]),
                              _job_id=printed_codes.job_id(draft["_id"])) is not None
    finished = await meetings.finish(ctx, town.secretary, draft["_id"])
    assert finished["status"] == "finished"


async def test_cancelling_a_backfilled_meeting_tells_nobody(ctx, town, sandbox):
    people = await add_people(ctx, town, 2)
    past = {**plan_fields(ctx.clock.now() - timedelta(days=2)), "confirm_past": True}
    draft = await meetings.create(ctx, town.secretary, town.branch["_id"], past)
    await meetings.publish(ctx, town.secretary, draft["_id"], confirm_past=True)
    cancelled = await meetings.cancel(ctx, town.secretary, draft["_id"], "录入错误")
    assert cancelled["status"] == "cancelled"
    assert await notices(ctx, people) == {"党员1": [], "党员2": []}


# -- d. no reminder right after the notice; none to members already in ------------------

async def test_a_meeting_published_within_its_reminder_time_gets_no_separate_reminder(ctx, town, clock):
    people = await add_people(ctx, town, 1)
    soon = await planned_meeting(ctx, town, ctx.clock.now() + timedelta(minutes=30))
    assert just_now(ctx, soon["reminded_at"])
    # Its reminder would be due 5 minutes after the notice: the notice says it all.
    near = await planned_meeting(ctx, town, ctx.clock.now() + timedelta(minutes=65))
    later = await planned_meeting(ctx, town, ctx.clock.now() + timedelta(days=1))
    assert near["reminded_at"] is not None and later["reminded_at"] is None
    clock.advance(timedelta(seconds=13))
    assert await reminders.send_due_reminders(ctx) == 0
    # Moved to start in 20 minutes: the change notice says when; no reminder follows it.
    moved = await meetings.update(ctx, town.secretary, later["_id"], plan_fields(ctx.clock.now() + timedelta(minutes=20)))
    assert moved["reminded_at"] is not None
    clock.advance(timedelta(minutes=1))
    assert await reminders.send_due_reminders(ctx) == 0
    assert (await notices(ctx, people))["党员1"] == ["meeting_published"] * 3 + ["meeting_changed"]


async def test_the_reminder_skips_members_checked_in_or_on_approved_leave(ctx, town, clock):
    people = await add_people(ctx, town, 4)
    meeting = await planned_meeting(ctx, town, ctx.clock.now() + timedelta(hours=3), reminder_minutes=30)
    assert meeting["reminded_at"] is None
    await meetings.request_leave(ctx, people[0], meeting["_id"], "出差")
    await meetings.decide_leave(ctx, town.secretary, meeting["_id"], people[0]["_id"], True)
    await meetings.request_leave(ctx, people[1], meeting["_id"], "看病")        # still pending
    clock.advance(timedelta(hours=2, minutes=15))                                 # check-in is open
    await checkin.manual_check_in(ctx, town.secretary, meeting["_id"], people[2]["_id"])
    assert await reminders.send_due_reminders(ctx) == 0                          # 45 min before: not yet
    clock.advance(timedelta(minutes=16))
    assert await reminders.send_due_reminders(ctx) == 1
    got = await notices(ctx, people)
    assert [name for name, kinds in got.items() if "meeting_reminder" in kinds] == ["党员2", "党员4"]
    assert just_now(ctx, (await meetings_model.get(ctx.db, meeting["_id"]))["reminded_at"])


# -- f. the page's 操作 section ---------------------------------------------------------

async def test_a_finished_meeting_with_confirmed_minutes_offers_no_action(ctx, town):
    await add_people(ctx, town, 1)
    meeting = await planned_meeting(ctx, town, ctx.clock.now() - timedelta(minutes=10))
    now = ctx.clock.now()
    assert secretary_actions(meeting, now) == ["edit", "start", "finish", "cancel"]
    await meetings.finish(ctx, town.secretary, meeting["_id"])
    assert secretary_actions(await reload(ctx, meeting), now) == ["cancel"]
    await meetings.record_minutes(ctx, town.secretary, meeting["_id"], "记录")
    confirmed = await meetings.confirm_minutes(ctx, town.secretary, meeting["_id"])
    assert secretary_actions(confirmed, now) == []
    cancelled = await meetings.cancel(ctx, town.secretary,
                                      (await planned_meeting(ctx, town, now + timedelta(days=1)))["_id"])
    assert secretary_actions(cancelled, now) == []
