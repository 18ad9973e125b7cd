"""Comments (心得体会): attendees write, the branch reads, the secretary hides with a reason."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from models import audit as audit_model
from models import comments as comments_model
from tests.meetingkit import actor, add_members, held, light_city, reload
from wxbackend.errors import DomainError, Forbidden, InvalidInput
from wxbackend.services.meetings import comments

DAY = date(2026, 3, 10)


@pytest.fixture
async def scene(ctx):
    """Branch A1's meeting: two present, one online, one excused, one absent; B1 outsiders."""
    city = await light_city(ctx)
    people = await add_members(ctx, city.branch_a1, 5)
    outsider = (await add_members(ctx, city.branch_b1, 1, prefix="外支部"))[0]
    meeting = await held(ctx, city.branch_a1, "theme_day", DAY, people, present=people[:2],
                         online=people[2:3], excused=people[3:4])
    return city, people, outsider, meeting


async def stored(ctx, meeting):
    return await comments_model.after(ctx.db, meeting["_id"], None, 100)


async def test_attendees_comment_and_the_branch_reads(ctx, scene):
    city, people, _, meeting = scene
    first = await comments.post(ctx, people[0], meeting["_id"], "  学习党章，收获很大。  ")
    await comments.post(ctx, people[2], str(meeting["_id"]), "线上参会也有体会")
    assert first["text"] == "学习党章，收获很大。" and first["name"] == "党员1"
    assert first["org_ancestors"] == city.branch_a1["org_ancestors"]
    rows, cursor = await comments.for_member(ctx, people[4], meeting["_id"])  # absent, but of the audience
    assert [r["text"] for r in rows] == ["学习党章，收获很大。", "线上参会也有体会"] and cursor is None
    assert (await reload(ctx, meeting["_id"]))["comment_count"] == 2


async def test_non_attendees_and_bad_text_are_refused_and_nothing_is_stored(ctx, scene):
    _, people, _, meeting = scene
    for who in (3, 4):  # excused, absent
        with pytest.raises(Forbidden) as refused:
            await comments.post(ctx, people[who], meeting["_id"], "我没来，但想说两句")
        assert refused.value.code == "not_attendee"
    for text, code in (("", "comment_empty"), ("   ", "comment_empty"), ("长" * 1001, "comment_too_long")):
        with pytest.raises(InvalidInput) as refused:
            await comments.post(ctx, people[0], meeting["_id"], text)
        assert refused.value.code == code
    assert await stored(ctx, meeting) == [] and (await reload(ctx, meeting["_id"]))["comment_count"] == 0


async def test_a_member_of_another_branch_can_neither_read_nor_write(ctx, scene):
    _, people, outsider, meeting = scene
    await comments.post(ctx, people[0], meeting["_id"], "本支部的心得")
    for attempt in (comments.for_member(ctx, outsider, meeting["_id"]),
                    comments.post(ctx, outsider, meeting["_id"], "外支部的心得")):
        with pytest.raises(Forbidden) as refused:
            await attempt
        assert refused.value.code == "out_of_scope"
    assert len(await stored(ctx, meeting)) == 1


async def test_comments_wait_until_the_meeting_has_started(ctx, scene):
    city, people, _, _ = scene
    later = await held(ctx, city.branch_a1, "lecture", ctx.clock.today() + timedelta(days=5), people,
                       present=people[:1], status="planned")
    with pytest.raises(DomainError) as refused:
        await comments.post(ctx, people[0], later["_id"], "提前写好的心得")
    assert refused.value.code == "meeting_not_held" and await stored(ctx, later) == []


async def test_the_secretary_hides_with_a_reason_once(ctx, scene):
    city, people, _, meeting = scene
    spam = await comments.post(ctx, people[1], meeting["_id"], "广告：低价代写心得")
    await comments.post(ctx, people[0], meeting["_id"], "认真学习")
    secretary = actor(city, "sec_a1")
    with pytest.raises(InvalidInput):
        await comments.hide(ctx, secretary, spam["_id"], "  ")
    with pytest.raises(Forbidden):
        await comments.hide(ctx, actor(city, "west"), spam["_id"], "越权隐藏")
    assert (await comments_model.get(ctx.db, spam["_id"]))["hidden"] is False
    hidden = await comments.hide(ctx, secretary, spam["_id"], "与会议无关的广告")
    again = await comments.hide(ctx, secretary, str(spam["_id"]), "再次隐藏")
    assert hidden["hidden"] and again["hidden_reason"] == "与会议无关的广告"
    assert len(await audit_model.for_target(ctx.db, spam["_id"])) == 1
    assert (await reload(ctx, meeting["_id"]))["comment_count"] == 1
    others, _ = await comments.for_member(ctx, people[0], meeting["_id"])
    assert [r["text"] for r in others] == ["认真学习"]
    author, _ = await comments.for_member(ctx, people[1], meeting["_id"])
    assert [(r["text"], r["hidden"], r.get("hidden_reason")) for r in author] == [
        ("广告：低价代写心得", True, "与会议无关的广告"), ("认真学习", False, None)]
    admin_rows, _ = await comments.for_admin(ctx, secretary, meeting["_id"])
    assert len(admin_rows) == 2


async def test_pages_walk_by_cursor_and_refuse_forged_ones(ctx, scene):
    _, people, _, meeting = scene
    for i in range(5):
        await comments.post(ctx, people[i % 3], meeting["_id"], f"心得{i}")
    seen, cursor = [], None
    while True:
        rows, cursor = await comments.for_member(ctx, people[4], meeting["_id"], cursor, 2)
        seen += [r["text"] for r in rows]
        if cursor is None:
            break
    assert seen == [f"心得{i}" for i in range(5)]
    with pytest.raises(InvalidInput):
        await comments.for_member(ctx, people[4], meeting["_id"], "not-an-id", 2)


async def test_the_phone_api_posts_and_lists_comments(ctx, server_url):
    import httpx

    from tests.meetingkit import bearer, phone_member

    city = await light_city(ctx)
    (me, token), (_, outsider) = (await phone_member(ctx, city.branch_a1, "小程序党员"),
                                  await phone_member(ctx, city.branch_b1, "外支部党员"))
    meeting = await held(ctx, city.branch_a1, "theme_day", DAY, [me], present=[me])
    url = f"/api/v1/meetings/{meeting['_id']}/comments"
    async with httpx.AsyncClient(base_url=server_url, timeout=30) as api:
        retry = {**bearer(token), "Idempotency-Key": "comment-1"}
        first = await api.post(url, headers=retry, json={"text": "学习体会"})
        replay = await api.post(url, headers=retry, json={"text": "学习体会"})
        assert first.status_code == replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
        listed = (await api.get(url, headers=bearer(token))).json()
        assert [(c["text"], c["mine"], c["name"]) for c in listed["items"]] == [("学习体会", True, "小程序党员")]
        empty = await api.post(url, headers=bearer(token), json={"text": ""})
        assert empty.status_code == 400
        foreign = await api.get(url, headers=bearer(outsider))
        assert foreign.status_code == 403 and foreign.json()["error"]["code"] == "out_of_scope"
        missing = await api.get(f"/api/v1/meetings/{'0' * 24}/comments", headers=bearer(token))
        assert missing.status_code == 404
    assert len(await stored(ctx, meeting)) == 1
