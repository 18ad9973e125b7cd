"""WeChat faults during delivery: 45009 pauses, 43101 is final, 40001/42001 refresh, -1 and
timeouts retry then fail visibly. The sandbox answers as WeChat would."""

from __future__ import annotations

import time

import pytest

from models import notifications as outbox_model
from models import notify_grants as grants_model
from tests.notifykit import drain, followers, new_members, small_city, statuses, use_templates
from wxbackend.clock import SHANGHAI
from wxbackend.services import notify
from wxbackend.services.accounts.access import Actor, Role
from wxbackend.services.notify import Recipient, notify_delivery, outbox

TEMPLATE_API = "/cgi-bin/message/template/send"
SUBSCRIBE_API = "/cgi-bin/message/subscribe/send"


@pytest.fixture
async def town(ctx):
    use_templates(ctx)
    ctx.settings.wechat.api_retries = 0  # one call per attempt: the counts below stay exact
    return await small_city(ctx)


async def notice(ctx, people, subject="notice:1"):
    data = {"title": "学习通知", "org": "东区区委", "sent_at": ctx.clock.now(), "notice_id": "n1",
            "excerpt": "请按时参加"}
    return await notify.notify(ctx, [Recipient(member_id=p["_id"]) for p in people], "notice", data,
                               subject=subject)


async def test_45009_pauses_the_api_until_midnight_and_holds_the_rest(ctx, town, sandbox):
    ctx.settings.notify.send_group = 1
    people = await followers(ctx, town.org("branch_a1"), sandbox, 4)
    await sandbox.fault(TEMPLATE_API, errcode=45009, times=1)
    result = await notice(ctx, people)
    await drain(ctx)
    assert sandbox.calls(TEMPLATE_API) == 1  # after the 45009 nobody else was tried
    assert await statuses(ctx, result.ids) == {"queued": 4}
    until = await notify_delivery.paused_until(ctx, notify_delivery.API_OA)
    midnight = notify_delivery.next_midnight(ctx.clock.now())
    assert until is not None and abs((until - midnight).total_seconds()) < 5
    assert midnight.astimezone(SHANGHAI).strftime("%H:%M") == "00:00"
    first = await outbox_model.get(ctx.db, result.ids[0])
    assert (first["errcode"], first["attempts"]) == (45009, 1)
    # The held job waits for midnight in the queue (arq keeps system-clock times); at
    # midnight (simulated) it sends them all.
    queue = ctx.settings.jobs.queue_name
    held = await ctx.redis.zrange(queue, 0, -1, withscores=True)
    wall_midnight = ctx.clock.to_system(midnight).timestamp()
    assert held and all(score / 1000 >= wall_midnight - 5 for _, score in held)
    await notify_delivery.resume(ctx, notify_delivery.API_OA)
    for job_id, _ in held:
        await ctx.redis.zadd(queue, {job_id: int(time.time() * 1000)})
    await drain(ctx)
    assert await statuses(ctx, result.ids) == {"sent": 4}
    assert len(await sandbox.outbox(kind="template")) == 4


async def test_43101_is_final_and_not_retried(ctx, town, sandbox):
    member = (await new_members(ctx, town.org("branch_a1"), 1))[0]
    await ctx.db["members"].update_one({"_id": member["_id"]}, {"$set": {"mp_openid": "mp-1"}})
    await sandbox.login_code("mp-1")
    # We believe the member granted one; WeChat (the sandbox) holds no grant: 43101.
    await grants_model.add(ctx.db, member["_id"], ["TPL_NOTICE_MP"], ctx.clock.now())
    result = await notice(ctx, [member])
    await drain(ctx)
    doc = await outbox_model.get(ctx.db, result.ids[0])
    assert (doc["status"], doc["errcode"], doc["attempts"]) == ("failed", 43101, 1)
    assert sandbox.calls(SUBSCRIBE_API) == 1
    assert await grants_model.for_member(ctx.db, member["_id"], ["TPL_NOTICE_MP"]) == {"TPL_NOTICE_MP": 0}


@pytest.mark.parametrize("errcode", [40001, 42001])
async def test_a_rejected_token_is_refreshed_and_the_message_sent(ctx, town, sandbox, errcode):
    people = await followers(ctx, town.org("branch_a1"), sandbox, 2)
    await sandbox.fault(TEMPLATE_API, errcode=errcode, times=1)
    result = await notice(ctx, people)
    await drain(ctx)
    assert await statuses(ctx, result.ids) == {"sent": 2}
    assert sandbox.calls("/cgi-bin/stable_token") >= 2  # fetched, then refreshed
    assert len(await sandbox.outbox(kind="template")) == 2


async def test_a_token_rejected_again_and_again_is_retried_later(ctx, town, sandbox):
    people = await followers(ctx, town.org("branch_a1"), sandbox, 1)
    await sandbox.fault(TEMPLATE_API, errcode=40001, times=3)
    result = await notice(ctx, people)
    await drain(ctx)
    doc = await outbox_model.get(ctx.db, result.ids[0])
    assert doc["status"] == "sent" and doc["attempts"] >= 2, {k: doc.get(k) for k in ("status", "attempts", "errcode", "errmsg", "next_at")}
    assert len(await sandbox.outbox(kind="template")) == 1


async def test_system_busy_retries_with_backoff_then_fails_visibly(ctx, town, sandbox):
    ctx.settings.notify.max_attempts = 3
    people = await followers(ctx, town.org("branch_a1"), sandbox, 1)
    await sandbox.fault(TEMPLATE_API, errcode=-1, times=100)
    result = await notice(ctx, people)
    await drain(ctx)
    doc = await outbox_model.get(ctx.db, result.ids[0])
    assert (doc["status"], doc["errcode"], doc["attempts"]) == ("failed", -1, 3)
    assert sandbox.calls(TEMPLATE_API) == 3
    # Visible: the outbox page of the district lists it with WeChat's error.
    city_admin = Actor(id=None, name="city", roles=[Role("city_admin", town.org("root"))])
    page = await outbox.page(ctx, city_admin, town.org("district_a"), status="failed")
    assert [(r["_id"], r["errcode"]) for r in page.rows] == [(doc["_id"], -1)]
    counts = await outbox.day_counts(ctx, city_admin, town.org("district_a"), days=1)
    assert (counts[0]["failed"], counts[0]["queued"]) == (1, 0)


async def test_system_busy_once_is_sent_on_the_next_try(ctx, town, sandbox):
    people = await followers(ctx, town.org("branch_a1"), sandbox, 1)
    await sandbox.fault(TEMPLATE_API, errcode=-1, times=1)
    result = await notice(ctx, people)
    await drain(ctx)
    doc = await outbox_model.get(ctx.db, result.ids[0])
    assert (doc["status"], doc["attempts"], doc["errcode"]) == ("sent", 2, None)
    assert len(await sandbox.outbox(kind="template")) == 1


async def test_a_timeout_is_retried(ctx, town, sandbox):
    ctx.settings.wechat.api_timeout_seconds = 0.3
    people = await followers(ctx, town.org("branch_a1"), sandbox, 1)
    await sandbox.fault(TEMPLATE_API, delay_seconds=0.8, times=1)
    result = await notice(ctx, people)
    await drain(ctx)
    doc = await outbox_model.get(ctx.db, result.ids[0])
    assert (doc["status"], doc["attempts"]) == ("sent", 2)
    # WeChat may have taken the request that timed out (the sandbox did, late): the one
    # duplicate at-least-once delivery allows, as the module docstring says.
    assert 1 <= len(await sandbox.outbox(kind="template")) <= 2


async def test_43004_records_the_unfollow_and_later_notices_skip_wechat(ctx, town, sandbox):
    people = await followers(ctx, town.org("branch_a1"), sandbox, 1)
    await sandbox.http.post(f"/sandbox/users/{people[0]['oa_openid']}", json={"following": False})
    first = await notice(ctx, people)
    await drain(ctx)
    doc = await outbox_model.get(ctx.db, first.ids[0])
    assert (doc["status"], doc["errcode"]) == ("failed", 43004)
    member = await ctx.db["members"].find_one({"_id": people[0]["_id"]})
    assert member["oa_following"] is False
    second = await notice(ctx, people, subject="notice:2")
    assert second.undeliverable == 1


async def test_an_admin_retries_a_failed_one(ctx, town, sandbox):
    ctx.settings.notify.max_attempts = 1
    people = await followers(ctx, town.org("branch_a1"), sandbox, 1)
    await sandbox.fault(TEMPLATE_API, errcode=-1, times=1)
    result = await notice(ctx, people)
    await drain(ctx)
    assert await statuses(ctx, result.ids) == {"failed": 1}
    secretary = Actor(id=None, name="书记", roles=[Role("secretary", town.org("branch_a1"))])
    outsider = Actor(id=None, name="西区", roles=[Role("committee_admin", town.org("district_b"))])
    from wxbackend.errors import Conflict, Forbidden

    with pytest.raises(Forbidden):
        await outbox.retry(ctx, outsider, result.ids[0])
    await outbox.retry(ctx, secretary, result.ids[0])
    with pytest.raises(Conflict):
        await outbox.retry(ctx, secretary, result.ids[0])
    await drain(ctx)
    assert await statuses(ctx, result.ids) == {"sent": 1}
    counts = await outbox.day_counts(ctx, secretary, town.org("branch_a1"), days=1)
    assert (counts[0]["sent"], counts[0]["failed"]) == (1, 0)


async def test_a_late_chat_reply_refused_for_a_passing_reason_is_sent_by_a_worker(ctx, town, sandbox):

    from wxbackend.wechat import background
    from wxbackend.wechat.late_reply import late_reply
    from wxbackend.wechat.router import Text

    await sandbox.follow("oLateChat")
    await sandbox.fault("/cgi-bin/message/custom/send", errcode=-1, times=1)
    await background.send_late_reply(ctx, "oLateChat", Text("这是迟到的回复"))
    assert await sandbox.outbox(kind="custom") == []  # the direct try failed
    await drain(ctx, horizon=10)
    assert [m["body"]["text"]["content"] for m in await sandbox.outbox(kind="custom")] == ["这是迟到的回复"]
    # A full quota is not retried; a stale reply is not sent.
    await sandbox.fault("/cgi-bin/message/custom/send", errcode=45009, times=1)
    await background.send_late_reply(ctx, "oLateChat", Text("配额用尽"))
    assert await ctx.redis.zcard(ctx.settings.jobs.queue_name) == 0
    assert await late_reply(ctx, "oLateChat", "过时的回复", time.time() - 3600) is False
    assert len(await sandbox.outbox(kind="custom")) == 1
