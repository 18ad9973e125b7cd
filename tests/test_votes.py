"""Votes (投票表决): one ballot per attendee, anonymity in storage, results only when closed."""

from __future__ import annotations

import asyncio
from datetime import date

import pytest

from models import audit as audit_model
from models import votes as votes_model
from tests.meetingkit import actor, add_members, held, light_city, reload
from wxbackend.errors import Conflict, DomainError, Forbidden, InvalidInput
from wxbackend.services.meetings import votes

OPTIONS = ["同意", "不同意", "弃权"]


@pytest.fixture
async def scene(ctx):
    """A meeting under way in branch A1: six present, one excused, one absent; one outsider."""
    city = await light_city(ctx)
    people = await add_members(ctx, city.branch_a1, 8)
    outsider = (await add_members(ctx, city.branch_b1, 1, prefix="外支部"))[0]
    meeting = await held(ctx, city.branch_a1, "branch_assembly", ctx.clock.today(), people,
                         present=people[:6], excused=people[6:7], status="in_progress")
    return city, people, outsider, meeting


async def new_vote(ctx, city, meeting, **options):
    return await votes.create(ctx, actor(city, "sec_a1"), meeting["_id"], "表决：接收预备党员", OPTIONS,
                              **options)


async def ballots_of(ctx, vote):
    return await ctx.db[votes_model.BALLOTS].find({"vote_id": vote["_id"]}).to_list()


async def test_results_are_hidden_until_closed_and_closing_twice_is_one_close(ctx, scene):
    city, people, _, meeting = scene
    vote = await new_vote(ctx, city, meeting)
    assert (await reload(ctx, meeting["_id"]))["vote_count"] == 1
    for member, choice in zip(people[:4], [0, 0, 1, 2], strict=True):
        counted = await votes.cast(ctx, member, vote["_id"], [choice])
    assert counted["ballots"] == 4 and votes.results(counted) is None
    secretary = actor(city, "sec_a1")
    closed = await votes.close(ctx, secretary, vote["_id"])
    again = await votes.close(ctx, secretary, str(vote["_id"]))
    assert votes.results(closed) == [2, 1, 1] and again["closed_at"] == closed["closed_at"]
    assert [e["action"] for e in await audit_model.for_target(ctx.db, vote["_id"])] == ["vote.close", "vote.create"]
    named = await votes.named_ballots(ctx, secretary, closed)
    assert sorted((b["name"], b["choices"]) for b in named) == [
        ("党员1", [0]), ("党员2", [0]), ("党员3", [1]), ("党员4", [2])]
    with pytest.raises(Conflict) as late:
        await votes.cast(ctx, people[4], vote["_id"], [0])
    assert late.value.code == "vote_closed" and len(await ballots_of(ctx, vote)) == 4


async def test_a_second_cast_and_twenty_concurrent_casts_give_one_ballot(ctx, scene):
    city, people, _, meeting = scene
    vote = await new_vote(ctx, city, meeting)
    await votes.cast(ctx, people[0], vote["_id"], [0])
    with pytest.raises(Conflict) as twice:
        await votes.cast(ctx, people[0], vote["_id"], [1])
    assert twice.value.code == "already_voted"
    outcomes = await asyncio.gather(*(votes.cast(ctx, people[1], vote["_id"], [i % 3]) for i in range(20)),
                                    return_exceptions=True)
    assert sum(not isinstance(o, Exception) for o in outcomes) == 1
    assert all(o.code == "already_voted" for o in outcomes if isinstance(o, Exception))
    stored = await votes_model.get(ctx.db, vote["_id"])
    assert stored["ballots"] == 2 and sum(stored["counts"]) == 2 and len(await ballots_of(ctx, vote)) == 2


async def test_anonymous_ballots_store_no_member_and_still_one_each(ctx, scene):
    city, people, _, meeting = scene
    vote = await new_vote(ctx, city, meeting, anonymous=True, multiple=True)
    casts = [votes.cast(ctx, m, vote["_id"], [0, 2] if i % 2 else [1]) for i, m in enumerate(people[:6])
             for _ in range(3)]  # each member three times at once
    outcomes = await asyncio.gather(*casts, return_exceptions=True)
    assert sum(not isinstance(o, Exception) for o in outcomes) == 6
    ballots = await ballots_of(ctx, vote)
    member_ids = {m["_id"] for m in people} | {str(m["_id"]) for m in people}
    assert len(ballots) == 6
    for ballot in ballots:
        assert set(ballot) == {"_id", "vote_id", "choices"}  # no member, no time
        assert isinstance(ballot["_id"], str) and ballot["_id"] not in member_ids
        assert not any(str(m) in ballot["_id"] for m in member_ids)
    voters = await ctx.db[votes_model.VOTERS].find({"vote_id": vote["_id"]}).to_list()
    assert sorted(v["_id"] for v in voters) == sorted(f"{vote['_id']}:{m['_id']}" for m in people[:6])
    assert all("choices" not in v for v in voters)
    closed = await votes.close(ctx, actor(city, "sec_a1"), vote["_id"])
    assert votes.results(closed) == [3, 3, 3] and closed["ballots"] == 6
    assert await votes.named_ballots(ctx, actor(city, "sec_a1"), closed) == []


async def test_only_attendees_of_the_branch_vote(ctx, scene):
    city, people, outsider, meeting = scene
    vote = await new_vote(ctx, city, meeting)
    for member, code in ((people[6], "not_attendee"), (people[7], "not_attendee"), (outsider, "out_of_scope")):
        with pytest.raises(Forbidden) as refused:
            await votes.cast(ctx, member, vote["_id"], [0])
        assert refused.value.code == code
    with pytest.raises(Forbidden):
        await votes.of_meeting_for_member(ctx, outsider, meeting["_id"])
    assert await ballots_of(ctx, vote) == [] and (await votes_model.get(ctx.db, vote["_id"]))["ballots"] == 0


async def test_bad_choices_are_refused_and_nothing_is_stored(ctx, scene):
    city, people, _, meeting = scene
    vote = await new_vote(ctx, city, meeting)
    for choices in ([], [3], [-1], [0, 1], [0, 0], [True]):
        with pytest.raises(InvalidInput) as refused:
            await votes.cast(ctx, people[0], vote["_id"], choices)
        assert refused.value.code == "bad_choices", choices
    assert await ballots_of(ctx, vote) == [] and (await votes_model.get(ctx.db, vote["_id"]))["ballots"] == 0


async def test_creating_checks_the_question_the_meeting_and_the_scope(ctx, scene):
    city, people, _, meeting = scene
    secretary = actor(city, "sec_a1")
    for title, options in (("", OPTIONS), ("事项", ["同意"]), ("事项", ["同意", "同意"]), ("事项", ["x" * 51, "y"])):
        with pytest.raises(InvalidInput):
            await votes.create(ctx, secretary, meeting["_id"], title, options)
    with pytest.raises(Forbidden):
        await votes.create(ctx, actor(city, "west"), meeting["_id"], "越权表决", OPTIONS)
    finished = await held(ctx, city.branch_a1, "theme_day", date(2026, 1, 5), people, present=people[:2])
    with pytest.raises(DomainError) as refused:
        await votes.create(ctx, secretary, finished["_id"], "会后表决", OPTIONS)
    assert refused.value.code == "meeting_not_open"
    assert await votes_model.of_meeting(ctx.db, meeting["_id"]) == []
    assert (await reload(ctx, meeting["_id"]))["vote_count"] == 0


async def test_closing_while_ballots_arrive_counts_exactly_the_ballots_kept(ctx, scene):
    city, people, _, meeting = scene
    vote = await new_vote(ctx, city, meeting, anonymous=True)
    casts = [votes.cast(ctx, m, vote["_id"], [0]) for m in people[:6]]
    outcomes = await asyncio.gather(*casts[:3], votes.close(ctx, actor(city, "sec_a1"), vote["_id"]),
                                    *casts[3:], return_exceptions=True)
    accepted = sum(1 for o in outcomes[:3] + outcomes[4:] if not isinstance(o, Exception))
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert all(getattr(o, "code", None) == "vote_closed" for o in refused)
    stored = await votes_model.get(ctx.db, vote["_id"])
    voters = await ctx.db[votes_model.VOTERS].count_documents({"vote_id": vote["_id"]})
    assert stored["status"] == "closed" and stored["ballots"] == stored["counts"][0] == accepted == voters
    assert len(await ballots_of(ctx, vote)) == accepted


async def test_members_see_which_votes_they_took_part_in(ctx, scene):
    city, people, _, meeting = scene
    first, second = await new_vote(ctx, city, meeting), await new_vote(ctx, city, meeting, anonymous=True)
    await votes.cast(ctx, people[0], second["_id"], [1])
    found, voted = await votes.of_meeting_for_member(ctx, people[0], meeting["_id"])
    assert [v["_id"] for v in found] == [first["_id"], second["_id"]] and voted == {second["_id"]}


async def test_the_phone_api_votes_once_and_shows_results_after_the_close(ctx, server_url):
    import httpx

    from tests.meetingkit import bearer, phone_member

    city = await light_city(ctx)
    me, token = await phone_member(ctx, city.branch_a1, "小程序党员")
    meeting = await held(ctx, city.branch_a1, "branch_assembly", ctx.clock.today(), [me], present=[me],
                         status="in_progress")
    vote = await new_vote(ctx, city, meeting, anonymous=True)
    async with httpx.AsyncClient(base_url=server_url, timeout=30) as api:
        listed = (await api.get(f"/api/v1/meetings/{meeting['_id']}/votes", headers=bearer(token))).json()
        assert [(v["title"], v["voted"], v["results"]) for v in listed["items"]] == [("表决：接收预备党员", False, None)]
        ballot = f"/api/v1/votes/{vote['_id']}/ballot"
        answers = await asyncio.gather(*(api.post(ballot, headers=bearer(token), json={"choices": [1]})
                                         for _ in range(20)))
        assert sorted(r.status_code for r in answers) == [200] + [409] * 19
        assert {r.json()["error"]["code"] for r in answers if r.status_code == 409} == {"already_voted"}
        bad = await api.post(ballot, headers=bearer(token), json={"choices": [0, 1]})
        assert bad.status_code == 400
        seen = (await api.get(f"/api/v1/votes/{vote['_id']}", headers=bearer(token))).json()
        assert seen["voted"] is True and seen["results"] is None and seen["ballots"] == 1
        await votes.close(ctx, actor(city, "sec_a1"), vote["_id"])
        seen = (await api.get(f"/api/v1/votes/{vote['_id']}", headers=bearer(token))).json()
        assert seen["status"] == "closed" and seen["results"] == [0, 1, 0]
    assert len(await ballots_of(ctx, vote)) == 1


async def test_the_secretary_manages_votes_on_the_web(ctx, city, web):
    from tests.conftest import ADMIN_PASSWORD

    people = await add_members(ctx, city.branch_a1, 2)
    meeting = await held(ctx, city.branch_a1, "branch_assembly", ctx.clock.today(), people, present=people,
                         status="in_progress")
    page = f"/admin/meetings/{meeting['_id']}/votes"
    await web.login("sec_a1", ADMIN_PASSWORD)
    refused = await web.post_form(page, {"title": "只有一个选项", "options": "同意"})
    assert refused.status_code == 400 and "选项应为2-20个" in refused.text
    made = await web.post_form(page, {"title": "表决：党费使用", "options": "同意\n不同意\n", "anonymous": "1"})
    assert made.status_code == 302
    [vote] = await votes_model.of_meeting(ctx.db, meeting["_id"])
    assert vote["options"] == ["同意", "不同意"] and vote["anonymous"] and not vote["multiple"]
    await votes.cast(ctx, people[0], vote["_id"], [1])
    shown = (await web.get(page)).text
    assert "已投票 1 人" in shown and "表决结束后公布结果" in shown
    for _ in range(2):
        assert (await web.post_form(f"/admin/votes/{vote['_id']}/close")).status_code == 302
    closed = (await web.get(page)).text
    assert "<td>不同意</td><td>1</td>" in closed and "结束表决并公布结果" not in closed
    assert [e["action"] for e in await audit_model.for_target(ctx.db, vote["_id"])] == ["vote.close", "vote.create"]
    await web.login("west", ADMIN_PASSWORD)
    assert (await web.get(page)).status_code == 403
    assert (await web.post_form(f"/admin/votes/{vote['_id']}/close")).status_code == 403
