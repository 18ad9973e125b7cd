"""Attendance marks as documents of their own: exactly once across processes, counters exact,
the settling that recounts after a crash, and a check-in that never rewrites the meeting."""

import asyncio
from collections import Counter
from datetime import timedelta

import pytest
from pymongo import monitoring

from models import attendance as attendance_model
from models import meetings as meetings_model
from tests.meetings_helpers import add_people, build_town, live_meeting, reload
from wxbackend.clock import SHANGHAI
from wxbackend.context import AppContext
from wxbackend.errors import DomainError
from wxbackend.services import meetings
from wxbackend.services.meetings import checkin, checkin_codes, compliance, tally


@pytest.fixture
async def town(ctx):
    return await build_town(ctx)


class Writes(monitoring.CommandListener):
    """The commands a process sends, by kind and collection."""

    def __init__(self) -> None:
        self.seen: Counter[tuple[str, str]] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in ("insert", "update", "delete", "find"):
            self.seen[(event.command_name, event.command[event.command_name])] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
async def other_process(ctx, servers):
    """A second server process on the same database: its own writers, caches and connections."""
    writes = Writes()
    other = await AppContext.connect(ctx.settings, servers.mongodb_uri, servers.redis_url, database=ctx.db.name,
                                     event_listeners=[writes], clock=ctx.clock, registry=ctx.registry)
    other.writes = writes
    yield other
    await other.close()


async def marks_and_counts(ctx, meeting):
    stored = await reload(ctx, meeting)
    return stored["attendance"], stored["counts"]


async def test_one_member_scanning_from_many_tasks_in_two_processes_is_one_mark(ctx, town, other_process):
    people = await add_people(ctx, town, 1)
    meeting = await live_meeting(ctx, town, online_link="https://meeting.example.org/j/9")
    member, scene = people[0], checkin_codes.mp_scene(meeting)
    scans = [checkin.check_in_member(process, meeting["_id"], member, scene=scene, nonce=f"n{i}")
             for i in range(30) for process in (ctx, other_process)]
    # ... while the same member also joins online from both (one mark either way, then present).
    online = [meetings_model.mark_attendance(process.db, meeting["_id"], member["_id"],
                                             {"status": "online", "how": "online", "at": ctx.clock.now()})
              for process in (ctx, other_process) for _ in range(5)]
    results = await asyncio.gather(*scans, *online)
    answers = Counter(r.code for r in results[:60])
    assert answers["checked_in"] >= 1 and answers["checked_in"] + answers["already_checked_in"] == 60
    assert sum(1 for r in results[60:] if r) <= 1          # at most one online mark was ever made
    marks, counts = await marks_and_counts(ctx, meeting)
    assert list(marks) == [str(member["_id"])] and marks[str(member["_id"])]["status"] == "present"
    assert counts == {"present": 1, "online": 0, "excused": 0}
    assert list(await attendance_model.of_meeting(ctx.db, meeting["_id"])) == [str(member["_id"])]


async def test_a_crowd_scanning_twice_through_two_processes_is_counted_exactly(ctx, town, other_process):
    people = await add_people(ctx, town, 40)
    meeting = await live_meeting(ctx, town)
    scene = checkin_codes.mp_scene(meeting)
    scans = [checkin.check_in_member(ctx if (i + round_) % 2 else other_process, meeting["_id"], m,
                                     scene=scene, nonce=f"{round_}-{i}")
             for round_ in (0, 1) for i, m in enumerate(people)]
    answers = Counter(r.code for r in await asyncio.gather(*scans))
    assert answers == {"checked_in": 40, "already_checked_in": 40}
    marks, counts = await marks_and_counts(ctx, meeting)
    assert len(marks) == 40 and counts == {"present": 40, "online": 0, "excused": 0}
    board = await meetings.board(ctx, town.secretary, meeting["_id"])
    assert board["present"] == 40 and board["absent"] == 0 and not board["missing"]


async def test_a_check_in_neither_rewrites_nor_reads_the_meeting(ctx, town, other_process):
    people = await add_people(ctx, town, 12)
    meeting = await live_meeting(ctx, town)
    scene = checkin_codes.mp_scene(meeting)
    await checkin.check_in_member(other_process, meeting["_id"], people[0], scene=scene)  # header read
    other_process.writes.seen.clear()
    await asyncio.gather(*(checkin.check_in_member(other_process, meeting["_id"], m, scene=scene)
                           for m in people[1:]))
    writes = other_process.writes.seen
    # What a check-in costs does not depend on the meeting's size: a round is a roll, an
    # insert of marks, an increment through the check-in gate; the meeting is not touched.
    assert not [w for w in writes if w[1] == meetings_model.COLLECTION]
    rounds = writes[("insert", attendance_model.COLLECTION)]
    assert 1 <= rounds <= 11 and set(writes) - {("find", attendance_model.COUNTS)} == {
        ("insert", attendance_model.COLLECTION), ("insert", attendance_model.ROLLS), ("update", attendance_model.COUNTS)}
    assert writes[("find", attendance_model.COUNTS)] <= 1   # at most a header refresh (its gate)
    assert writes[("insert", attendance_model.ROLLS)] == writes[("update", attendance_model.COUNTS)] == rounds


async def test_a_mark_made_while_the_meeting_was_cancelled_is_taken_back(ctx, town):
    people = await add_people(ctx, town, 1)
    meeting = await live_meeting(ctx, town)
    await checkin._header(ctx, meeting["_id"])        # this process still believes it open
    # Cancelled by another process, after this one read the meeting (through the model, as all do).
    await meetings_model.update_one_if(ctx.db, meeting["_id"], {}, {"$set": {"status": "cancelled"}})
    with pytest.raises(DomainError) as err:
        await checkin.check_in_member(ctx, meeting["_id"], people[0], scene=checkin_codes.mp_scene(meeting))
    assert err.value.code == "meeting_cancelled"
    marks, counts = await marks_and_counts(ctx, meeting)
    assert marks == {} and counts == {"present": 0, "online": 0, "excused": 0}


async def test_counters_a_crash_left_short_are_recounted_once_the_meeting_is_settled(ctx, town):
    people = await add_people(ctx, town, 6)
    meeting = await live_meeting(ctx, town)
    scene = checkin_codes.mp_scene(meeting)
    for member in people[:3]:
        await checkin.check_in_member(ctx, meeting["_id"], member, scene=scene)
    # A process killed between its two writes: two marks inserted, never counted.
    lost = {str(m["_id"]): {"status": "present", "how": "mp_code", "at": ctx.clock.now()} for m in people[3:5]}
    assert (await attendance_model.claim(ctx.db, meeting["_id"], lost))[0] == list(lost)
    assert (await reload(ctx, meeting))["counts"]["present"] == 3
    board = await meetings.board(ctx, town.secretary, meeting["_id"])
    assert board["present"] == 5 and board["absent"] == 1        # the board counts the marks it lists
    finished = await meetings.finish(ctx, town.secretary, meeting["_id"])
    status = await compliance.branch_status(ctx, town.secretary, town.branch["_id"], finished["month"])
    assert status.attended == 3
    assert await tally.settle(ctx, meeting["_id"]) is None           # in-flight rounds may still count
    ctx.clock.set(ctx.clock.now() + tally.GRACE + timedelta(minutes=1))
    assert (await tally.settle_finished(ctx))["settled"] == 1
    stored = await reload(ctx, meeting)
    assert stored["counts"] == {"present": 5, "online": 0, "excused": 0} and stored["counts_live"] is False
    assert await ctx.db[attendance_model.COUNTS].count_documents({"_id": meeting["_id"]}) == 0
    status = await compliance.branch_status(ctx, town.secretary, town.branch["_id"], finished["month"])
    assert status.attended == 5 and status.meetings == 1
    assert (await tally.settle_finished(ctx))["settled"] == 0         # once
    listed = await meetings_model.in_org_month(ctx.db, town.branch["_id"], finished["month"])
    assert listed[0]["counts"] == stored["counts"]
    # Settled, the meeting holds its marks, as the demo history does; their documents are gone.
    assert len(stored["attendance"]) == 5
    assert not await attendance_model.of_members(ctx.db, meeting["_id"], [m["_id"] for m in people])
    mine = await meetings_model.get(ctx.db, meeting["_id"], {"title": 1, f"attendance.{people[4]['_id']}": 1})
    assert mine["attendance"][str(people[4]["_id"])]["how"] == "mp_code"
    board = await meetings.board(ctx, town.secretary, meeting["_id"])
    assert board["present"] == 5 and board["missing"] == [people[5]["name"]]


async def test_settling_completes_a_leave_decision_a_crash_cut_in_half(ctx, town):
    people = await add_people(ctx, town, 3)
    meeting = await live_meeting(ctx, town)
    await checkin.check_in_member(ctx, meeting["_id"], people[0], scene=checkin_codes.mp_scene(meeting))
    mid, withdrawn = str(people[1]["_id"]), str(people[2]["_id"])
    now = ctx.clock.now()
    # Approved, and killed before the excused mark; withdrawn, and killed before the mark went.
    await ctx.db.meetings.update_one({"_id": meeting["_id"]}, {"$set": {
        f"leave.{mid}": {"reason": "出差", "status": "approved", "at": now, "decided_by": "王书记", "decided_at": now},
        f"leave.{withdrawn}": {"reason": "值班", "status": "withdrawn", "at": now}}})
    await attendance_model.claim(ctx.db, meeting["_id"], {withdrawn: {"status": "excused", "how": "leave", "at": now}})
    await meetings.finish(ctx, town.secretary, meeting["_id"])
    counts = await tally.settle(ctx, meeting["_id"], now + tally.GRACE + timedelta(hours=2))
    assert counts == {"present": 1, "online": 0, "excused": 1}
    marks, stored = await marks_and_counts(ctx, meeting)
    assert stored == counts and set(marks) == {str(people[0]["_id"]), mid} and marks[mid]["how"] == "leave"


async def test_a_leave_approved_then_withdrawn_moves_the_counters_both_ways(ctx, town):
    people = await add_people(ctx, town, 2)
    meeting = await meetings.publish(ctx, town.secretary, (await meetings.create(
        ctx, town.secretary, town.branch["_id"], {"type": "theme_day", "title": "四月主题党日", "place": "活动室",
                                                   "start": ctx.clock.now() + timedelta(days=1),
                                                   "end": ctx.clock.now() + timedelta(days=1, hours=1)}))["_id"])
    await meetings.request_leave(ctx, people[0], meeting["_id"], "出差")
    await meetings.decide_leave(ctx, town.secretary, meeting["_id"], people[0]["_id"], True)
    marks, counts = await marks_and_counts(ctx, meeting)
    assert counts["excused"] == 1 and marks[str(people[0]["_id"])]["how"] == "leave"
    await asyncio.gather(*(meetings.withdraw_leave(ctx, people[0], meeting["_id"]) for _ in range(5)))
    marks, counts = await marks_and_counts(ctx, meeting)
    assert marks == {} and counts == {"present": 0, "online": 0, "excused": 0}


class Finds(Writes):
    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find":
            self.seen[event.command["find"]] += 1


async def test_the_board_reads_only_the_marks_that_changed_and_stays_exact(ctx, town, servers):
    people = await add_people(ctx, town, 4)
    meeting = await live_meeting(ctx, town, online_link="https://meeting.example.org/j/7")
    scene = checkin_codes.mp_scene(meeting)
    finds = Finds()
    secretary = await AppContext.connect(ctx.settings, servers.mongodb_uri, servers.redis_url, database=ctx.db.name,
                                         event_listeners=[finds], clock=ctx.clock, registry=ctx.registry)
    try:
        async def look():
            finds.seen.clear()
            data = await meetings.board(secretary, town.secretary, meeting["_id"])
            return data, finds.seen[attendance_model.COLLECTION] + finds.seen[attendance_model.ROLLS]

        await checkin.check_in_member(ctx, meeting["_id"], people[0], scene=scene)
        data, reads = await look()
        assert (data["present"], data["absent"], reads) == (1, 3, 2)
        data, reads = await look()
        assert (data["present"], reads) == (1, 0)          # nothing changed: no mark read
        await meetings.join_online(ctx, people[1], meeting["_id"])
        await checkin.check_in_member(ctx, meeting["_id"], people[2], scene=scene)
        data, reads = await look()
        assert (data["present"], data["online"], data["absent"], reads) == (2, 1, 1, 2)
        await checkin.check_in_member(ctx, meeting["_id"], people[1], scene=scene)   # came after all
        data, _ = await look()
        assert (data["present"], data["online"], len(data["arrived"])) == (3, 0, 3)
        # A removal (a withdrawn leave) makes the board read every mark again.
        later = await meetings.publish(ctx, town.secretary, (await meetings.create(
            ctx, town.secretary, town.branch["_id"], {"type": "theme_day", "title": "五月主题党日", "place": "活动室",
                                                       "start": ctx.clock.now() + timedelta(days=2),
                                                       "end": ctx.clock.now() + timedelta(days=2, hours=1)}))["_id"])
        await meetings.request_leave(ctx, people[3], later["_id"], "出差")
        await meetings.decide_leave(ctx, town.secretary, later["_id"], people[3]["_id"], True)
        assert (await meetings.board(secretary, town.secretary, later["_id"]))["excused"] == 1
        await meetings.withdraw_leave(ctx, people[3], later["_id"])
        data = await meetings.board(secretary, town.secretary, later["_id"])
        assert data["excused"] == 0 and data["missing"] == sorted(p["name"] for p in people)
    finally:
        await secretary.close()


async def test_a_meeting_written_without_a_gate_gets_one_at_its_first_check_in(ctx, town, other_process):
    people = await add_people(ctx, town, 6)
    now = ctx.clock.now().replace(microsecond=0)
    doc = meetings_model.new_meeting(town.branch, "theme_day", "直接写入的会议", now - timedelta(minutes=5),
                                     now + timedelta(hours=1), {"user_id": None, "name": "王书记"},
                                     SHANGHAI,
                                     now=now, status="planned", published_at=now,
                                     expected=[p["_id"] for p in people], expected_count=len(people))
    await meetings_model.insert(ctx.db, doc)                     # as the benchmark does: no gate yet
    scene = checkin_codes.mp_scene(doc)
    await checkin.check_in_member(other_process, doc["_id"], people[0], scene=scene)
    assert await attendance_model.gate(ctx.db, doc["_id"])        # opened by the first header read
    other_process.writes.seen.clear()
    await asyncio.gather(*(checkin.check_in_member(other_process, doc["_id"], p, scene=scene) for p in people[1:]))
    assert not [w for w in other_process.writes.seen if w[1] == meetings_model.COLLECTION]
    assert (await reload(ctx, doc))["counts"]["present"] == 6
