"""Check-in: the rules, the rotating code, idempotency under retries and races."""

import asyncio
from datetime import timedelta

import pytest
from bson import ObjectId

from models import meetings as meetings_model
from tests.meetings_helpers import add_people, build_town, live_meeting, planned_meeting, reload
from wxbackend.errors import DomainError
from wxbackend.services import meetings
from wxbackend.services.meetings import checkin, checkin_batch, checkin_codes


@pytest.fixture
async def town(ctx):
    return await build_town(ctx)


def printed(meeting):
    """The scene of the meeting's printed mini-program code: what scanning it gives the phone."""
    return checkin_codes.mp_scene(meeting)


async def refused(call, code):
    with pytest.raises(DomainError) as err:
        await call
    assert err.value.code == code, err.value.message
    return err.value


async def test_first_check_in_counts_and_a_second_answers_already(ctx, town):
    people = await add_people(ctx, town, 2)
    meeting = await live_meeting(ctx, town)
    first = await checkin.check_in_member(ctx, meeting["_id"], people[0], "mp_code", scene=printed(meeting))
    assert first.code == "checked_in" and first.message.startswith("签到成功")
    second = await checkin.check_in_member(ctx, meeting["_id"], people[0], scene=printed(meeting))
    assert second.code == "already_checked_in" and second.at == first.at
    assert second.message.startswith("已签到")
    stored = await reload(ctx, meeting)
    assert stored["counts"]["present"] == 1
    mark = stored["attendance"][str(people[0]["_id"])]
    assert mark["how"] == "mp_code" and mark["status"] == "present"


async def test_fifty_identical_scans_at_once_make_one_check_in(ctx, town):
    people = await add_people(ctx, town, 1)
    meeting = await live_meeting(ctx, town)
    scans = [checkin.check_in_member(ctx, meeting["_id"], people[0], scene=printed(meeting), nonce="scan-1")
             for _ in range(50)]
    results = await asyncio.gather(*scans)
    # The same scan (same nonce) gets the same answer every time.
    assert {r.code for r in results} == {"checked_in"} and len({r.at for r in results}) == 1
    stored = await reload(ctx, meeting)
    assert stored["counts"]["present"] == 1 and len(stored["attendance"]) == 1
    other = await checkin.check_in_member(ctx, meeting["_id"], people[0], scene=printed(meeting), nonce="scan-2")
    assert other.code == "already_checked_in"


async def test_refusals_record_nothing(ctx, town):
    people = await add_people(ctx, town, 2)
    stranger = (await add_people(ctx, town, 1, other=True))[0]
    meeting = await live_meeting(ctx, town, audience="list", member_ids=[str(people[0]["_id"])])
    future = await planned_meeting(ctx, town, ctx.clock.now() + timedelta(hours=3))
    cancelled = await live_meeting(ctx, town)
    await meetings.cancel(ctx, town.secretary, cancelled["_id"])
    mid = meeting["_id"]
    await refused(checkin.check_in_member(ctx, mid, people[1], scene=printed(meeting)), "checkin_not_expected")
    await refused(checkin.check_in_member(ctx, mid, stranger, scene=printed(meeting)), "out_of_scope")
    err = await refused(checkin.check_in_member(ctx, future["_id"], people[0], scene=printed(future)),
                        "checkin_window_closed")
    assert "签到尚未开始" in err.message
    late = ctx.clock.now() + timedelta(hours=2)
    err = await refused(checkin.check_in_member(ctx, mid, people[0], scene=printed(meeting), now=late),
                        "checkin_window_closed")
    assert "已结束" in err.message
    await refused(checkin.check_in_member(ctx, cancelled["_id"], people[0], scene=printed(cancelled)), "meeting_cancelled")
    await refused(checkin.check_in_member(ctx, "0" * 24, people[0], "mp_code"), "meeting_not_found")
    await refused(checkin.check_in_member(ctx, "junk", people[0], "mp_code"), "meeting_not_found")
    for m in (meeting, future, cancelled):
        stored = await reload(ctx, m)
        assert stored["attendance"] == {} and stored["counts"]["present"] == 0


async def test_branch_members_may_check_in_when_the_secretary_allows(ctx, town):
    people = await add_people(ctx, town, 2)
    meeting = await live_meeting(ctx, town, audience="list", member_ids=[str(people[0]["_id"])],
                                 allow_branch_members=True)
    result = await checkin.check_in_member(ctx, meeting["_id"], people[1], scene=printed(meeting))
    assert result.code == "checked_in"


async def test_rotating_code_accepts_this_and_the_previous_step_only(ctx, town):
    people = await add_people(ctx, town, 4)
    meeting = await live_meeting(ctx, town)
    now = ctx.clock.now()
    step = ctx.settings.meetings.rotating_step_seconds
    current = checkin_codes.rotating_token(ctx, meeting["_id"], now)
    previous = checkin_codes.rotating_token(ctx, meeting["_id"], now - timedelta(seconds=step))
    stale = checkin_codes.rotating_token(ctx, meeting["_id"], now - timedelta(seconds=2 * step + 1))
    future = checkin_codes.rotating_token(ctx, meeting["_id"], now + timedelta(seconds=step))
    forged = current[:-2] + ("AA" if not current.endswith("AA") else "BB")
    other_meeting = checkin_codes.rotating_token(ctx, ObjectId(), now)
    assert (await checkin.check_in_member(ctx, meeting["_id"], people[0], "rotating", token=current)).code == "checked_in"
    assert (await checkin.check_in_member(ctx, meeting["_id"], people[1], "rotating", token=previous)).code == "checked_in"
    await refused(checkin.check_in_member(ctx, meeting["_id"], people[2], "rotating", token=stale),
                  "checkin_token_expired")
    for bad in (forged, future, other_meeting, "", "a.b.c", "x" * 200):
        await refused(checkin.check_in_member(ctx, meeting["_id"], people[2], "rotating", token=bad),
                      "checkin_token_invalid")
    stored = await reload(ctx, meeting)
    assert stored["counts"]["present"] == 2 and str(people[2]["_id"]) not in stored["attendance"]
    assert stored["attendance"][str(people[0]["_id"])]["how"] == "rotating"


def test_rotating_token_needs_the_secret_key(ctx):
    meeting_id = ObjectId()
    token = checkin_codes.rotating_token(ctx, meeting_id)
    assert checkin_codes.verify_token(ctx, token, ctx.clock.now()) == meeting_id
    ctx.settings.security.secret_key = "another-secret-key-of-at-least-32-chars!!"
    ctx.replace_state(checkin_codes.TokenKey(ctx.settings.security.secret_key))  # a process started with it
    with pytest.raises(DomainError) as err:
        checkin_codes.verify_token(ctx, token, ctx.clock.now())
    assert err.value.code == "checkin_token_invalid"


async def test_manual_check_in_is_audited_and_scoped(ctx, town):
    people = await add_people(ctx, town, 1)
    meeting = await live_meeting(ctx, town)
    await refused(checkin.manual_check_in(ctx, town.outsider, meeting["_id"], people[0]["_id"]), "out_of_scope")
    result = await checkin.manual_check_in(ctx, town.secretary, meeting["_id"], people[0]["_id"])
    assert result.code == "checked_in"
    stored = await reload(ctx, meeting)
    assert stored["attendance"][str(people[0]["_id"])]["by"] == "王书记"
    entries = await ctx.db.audit_log.find({"target.id": meeting["_id"]}).to_list()
    assert [e["details"]["member"] for e in entries if e["action"] == "meeting.manual_checkin"] == ["党员1"]


async def test_online_or_excused_member_who_comes_is_present(ctx, town):
    people = await add_people(ctx, town, 2)
    meeting = await live_meeting(ctx, town, online_link="https://meeting.example.org/j/1")
    joined = await meetings.join_online(ctx, people[0], meeting["_id"])
    assert joined["recorded"] and joined["mark"]["status"] == "online"
    again = await meetings.join_online(ctx, people[0], meeting["_id"])
    assert not again["recorded"]
    result = await checkin.check_in_member(ctx, meeting["_id"], people[0], scene=printed(meeting))
    assert result.code == "checked_in"
    stored = await reload(ctx, meeting)
    assert stored["counts"] == {"present": 1, "online": 0, "excused": 0}
    assert stored["attendance"][str(people[0]["_id"])]["replaced"] == "online"


async def test_a_meeting_moved_meanwhile_is_judged_again(ctx, town):
    people = await add_people(ctx, town, 1)
    meeting = await live_meeting(ctx, town)
    await checkin._header(ctx, meeting["_id"])        # this process now holds the old times
    later = ctx.clock.now() + timedelta(days=1)
    # Moved by another process (every change of a meeting goes through its model).
    await meetings_model.update_one_if(ctx.db, meeting["_id"], {},
                                       {"$set": {"start": later, "end": later + timedelta(hours=1)}})
    await refused(checkin.check_in_member(ctx, meeting["_id"], people[0], scene=printed(meeting)), "checkin_window_closed")
    assert (await reload(ctx, meeting))["attendance"] == {}


async def test_a_crowd_scanning_at_once_is_counted_exactly(ctx, town):
    people = await add_people(ctx, town, 30)
    meeting = await live_meeting(ctx, town)
    for member in people[:10]:      # already in before the crowd arrives
        await checkin.check_in_member(ctx, meeting["_id"], member, scene=printed(meeting))
    crowd = [checkin.check_in_member(ctx, meeting["_id"], m, scene=printed(meeting), nonce=f"c{i}")
             for i, m in enumerate(people)]
    crowd += [checkin.check_in_member(ctx, meeting["_id"], people[-1], scene=printed(meeting), nonce="twice")]
    results = await asyncio.gather(*crowd)
    codes = [r.code for r in results]
    assert codes.count("checked_in") == 20 and codes.count("already_checked_in") == 11
    stored = await reload(ctx, meeting)
    assert stored["counts"]["present"] == 30 and len(stored["attendance"]) == 30
    writers = ctx.state(checkin_batch.Writers)
    assert len(writers) == 1     # one meeting, one queue: the crowd shared few writes
