"""The notify service: channels, templates, idempotency, missing data, inboxes, a real worker."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from bson import ObjectId

from models import notifications as outbox_model
from models import notify_grants as grants_model
from models import notify_messages as messages_model
from models import notify_stats as stats_model
from models import users as users_model
from tests.notifykit import (
    drain,
    followers,
    new_members,
    queued_jobs,
    small_city,
    statuses,
    use_templates,
)
from wxbackend.capability import Capability
from wxbackend.errors import InvalidInput, NotFound
from wxbackend.services import notify
from wxbackend.services.notify import Kind, Recipient

EVENT = Kind(
    name="test_event", title="测试通知", template_setting="test_event",
    fields={"thing1": "{title}", "time2": "{when}"}, required=("title", "when"),
    link="/admin/events/{event_id}", page="pages/event?id={event_id}", summary="{title}在{place}")


@pytest.fixture
def extra_capabilities():
    return (Capability("test_notify", kinds=(EVENT,)),)


def data(**extra):
    return {"title": "支部大会", "when": datetime(2025, 3, 1, 1, 30, tzinfo=UTC), "place": "三楼",
            "event_id": "e1", **extra}


@pytest.fixture
async def town(ctx):
    return await small_city(ctx)


@pytest.fixture
def templates(ctx):
    use_templates(ctx)
    ctx.settings.notify.test_event_oa_template_id = "TPL_EVENT"
    ctx.settings.notify.test_event_mp_template_id = "TPL_EVENT_MP"


def members_of(people):
    return [Recipient(member_id=p["_id"]) for p in people]


async def test_followers_get_one_template_message_each_through_the_queue(ctx, town, sandbox, templates):
    people = await followers(ctx, town.org("branch_a1"), sandbox, 3)
    result = await notify.notify(ctx, members_of(people), "test_event", data(), subject="event:e1")
    assert (result.created, result.queued, result.duplicates) == (3, 3, 0)
    assert await statuses(ctx, result.ids) == {"queued": 3}
    assert await sandbox.outbox() == []  # nothing is sent before a worker runs
    await drain(ctx)
    assert await statuses(ctx, result.ids) == {"sent": 3}
    sent = await sandbox.outbox(kind="template")
    assert sorted(m["openid"] for m in sent) == sorted(p["oa_openid"] for p in people)
    body = sent[0]["body"]
    # Rendered once at enqueue: times in Asia/Shanghai, the member's page in the mini-program.
    assert body["template_id"] == "TPL_EVENT"
    assert body["data"] == {"thing1": {"value": "支部大会"}, "time2": {"value": "2025-03-01 09:30"}}
    assert body["miniprogram"]["pagepath"] == "pages/event?id=e1"
    doc = await outbox_model.get(ctx.db, result.ids[0])
    assert doc["msgid"] and doc["attempts"] == 1 and doc["errcode"] is None
    day = ctx.clock.today().isoformat()
    stats = await stats_model.for_org(ctx.db, town.org("district_a"), [day])
    assert (stats[day]["total"], stats[day]["sent"]) == (3, 3)


async def test_the_same_subject_notifies_nobody_twice(ctx, town, sandbox, templates):
    people = await followers(ctx, town.org("branch_a1"), sandbox, 2)
    first = await notify.notify(ctx, members_of(people), "test_event", data(), subject="event:e1")
    await drain(ctx)
    again = await notify.notify(ctx, members_of(people), "test_event", data(), subject="event:e1")
    assert (again.created, again.duplicates) == (0, 2)
    await drain(ctx)
    assert len(await sandbox.outbox(kind="template")) == 2
    # Another event is another subject.
    other = await notify.notify(ctx, members_of(people[:1]), "test_event", data(), subject="event:e2")
    assert other.created == 1
    assert first.ids[0] != other.ids[0]


async def test_missing_data_fails_at_enqueue_and_writes_nothing(ctx, town, sandbox, templates):
    people = await followers(ctx, town.org("branch_a1"), sandbox, 1)
    with pytest.raises(InvalidInput) as caught:
        await notify.notify(ctx, members_of(people), "test_event", data(title=""), subject="event:e1")
    assert caught.value.code == "notify_missing_data" and "title" in caught.value.message
    with pytest.raises(InvalidInput) as caught:  # a field only a template or link uses
        await notify.notify(ctx, members_of(people), "test_event",
                            {"title": "t", "when": "2025-03-01"}, subject="event:e1")
    assert "event_id" in caught.value.message and "place" in caught.value.message
    with pytest.raises(InvalidInput):
        await notify.notify(ctx, members_of(people), "no_such_kind", data(), subject="x")
    with pytest.raises(InvalidInput):
        await notify.notify(ctx, [Recipient()], "test_event", data(), subject="x")
    with pytest.raises(InvalidInput):
        await notify.notify(ctx, members_of(people), "test_event", data(), subject=" ")
    assert await ctx.db[outbox_model.COLLECTION].count_documents({"owner": people[0]["_id"]}) == 0
    assert await ctx.db[messages_model.COLLECTION].count_documents({"created_at": {"$gt": datetime(2000, 1, 1)}}) == 0
    assert await queued_jobs(ctx) == 0


async def test_channels_follower_grant_or_inbox_only(ctx, town, sandbox, templates):
    follower = (await followers(ctx, town.org("branch_a1"), sandbox, 1))[0]
    granted, plain = await new_members(ctx, town.org("branch_a1"), 2, "小程序")
    await ctx.db["members"].update_one({"_id": granted["_id"]}, {"$set": {"mp_openid": "mp-granted"}})
    await ctx.db["members"].update_one({"_id": plain["_id"]}, {"$set": {"mp_openid": "mp-plain"}})
    await grants_model.add(ctx.db, granted["_id"], ["TPL_EVENT_MP"], ctx.clock.now())
    await sandbox.login_code("mp-granted")  # the sandbox knows the mini-program user
    await sandbox.http.post("/sandbox/mp/users/mp-granted/grant-subscribe", json={"template_id": "TPL_EVENT_MP"})
    result = await notify.notify(ctx, members_of([follower, granted, plain]), "test_event", data(),
                                 subject="event:e1")
    assert (result.queued, result.undeliverable) == (2, 1)
    docs = {d["owner"]: d for d in await outbox_model.by_ids(ctx.db, result.ids)}
    assert [docs[p["_id"]]["channel"] for p in (follower, granted, plain)] == ["oa", "mp", "inbox"]
    assert docs[plain["_id"]]["errmsg"] == "未关注公众号，也未订阅小程序消息"
    await drain(ctx)
    assert await statuses(ctx, result.ids) == {"sent": 2, "undeliverable": 1}
    subscribe = await sandbox.outbox(kind="subscribe")
    assert [m["openid"] for m in subscribe] == ["mp-granted"]
    assert subscribe[0]["body"]["page"] == "pages/event?id=e1"
    assert await grants_model.for_member(ctx.db, granted["_id"], ["TPL_EVENT_MP"]) == {"TPL_EVENT_MP": 0}


async def test_a_kind_without_templates_lands_in_the_inbox_only(ctx, town, sandbox, templates):
    ctx.settings.notify.test_event_oa_template_id = ctx.settings.notify.test_event_mp_template_id = ""
    people = await followers(ctx, town.org("branch_a1"), sandbox, 1)
    result = await notify.notify(ctx, members_of(people), "test_event", data(), subject="event:e1")
    doc = await outbox_model.get(ctx.db, result.ids[0])
    assert (doc["status"], doc["errmsg"]) == ("undeliverable", "该类通知未配置微信消息模板")
    assert await queued_jobs(ctx) == 0


async def test_a_fields_setting_overrides_the_mapping_and_values_fit_wechats_limits(ctx, town, sandbox, templates):
    ctx.settings.notify.test_event_oa_fields = "first={title}（{place}）;keyword1={title}"
    content = notify.render(ctx, "test_event", data(title="很" * 30))
    assert content.oa["data"]["first"]["value"] == "很" * 30 + "（三楼）"
    ctx.settings.notify.test_event_oa_fields = ""
    content = notify.render(ctx, "test_event", data(title="很" * 30))
    assert content.oa["data"]["thing1"]["value"] == "很" * 19 + "…"  # thing: 20 characters
    ctx.settings.notify.test_event_oa_fields = "thing1"
    with pytest.raises(InvalidInput):
        notify.render(ctx, "test_event", data())


async def test_admin_users_get_the_web_inbox_and_linked_ones_wechat_too(ctx, city, sandbox, templates):
    linked_member = (await followers(ctx, city.org("branch_a1"), sandbox, 1))[0]
    await users_model.update(ctx.db, city.users["east"]["_id"], {"$set": {"member_id": linked_member["_id"]}})
    recipients = [Recipient(user_id=city.users["sec_a1"]["_id"]), Recipient(user_id=city.users["east"]["_id"])]
    result = await notify.notify(ctx, recipients, "test_event", data(), subject="event:e1")
    assert (result.web, result.queued) == (1, 1)
    await drain(ctx)
    sent = await sandbox.outbox(kind="template")
    assert [m["openid"] for m in sent] == [linked_member["oa_openid"]]
    assert sent[0]["body"]["url"].endswith("/admin/events/e1")  # an admin opens the management web
    items, cursor = await notify.inbox(ctx, city.users["sec_a1"]["_id"], None, 10)
    assert [i.message["title"] for i in items] == ["测试通知：支部大会"] and cursor is None
    assert items[0].doc["status"] == "sent" and items[0].doc["channel"] == "web"


async def test_inbox_pages_and_read_state(ctx, town, sandbox, templates):
    member = (await new_members(ctx, town.org("branch_a1"), 1))[0]
    for i in range(5):
        await notify.notify(ctx, members_of([member]), "test_event", data(), subject=f"event:{i}")
    page1, cursor = await notify.inbox(ctx, member["_id"], None, 3)
    page2, end = await notify.inbox(ctx, member["_id"], cursor, 3)
    assert len(page1) == 3 and len(page2) == 2 and end is None
    assert page1[0].doc["_id"] > page1[-1].doc["_id"] > page2[0].doc["_id"]  # newest first
    read = await notify.mark_read(ctx, member["_id"], page2[0].doc["_id"])
    assert read.doc["read_at"] is not None
    again = await notify.mark_read(ctx, member["_id"], page2[0].doc["_id"])
    assert again.doc["read_at"] == read.doc["read_at"]
    other = (await new_members(ctx, town.org("branch_a1"), 1, "别人"))[0]
    with pytest.raises(NotFound):  # someone else's notification
        await notify.mark_read(ctx, other["_id"], page2[0].doc["_id"])
    with pytest.raises(NotFound):
        await notify.mark_read(ctx, member["_id"], str(ObjectId()))
    with pytest.raises(InvalidInput):
        await notify.inbox(ctx, member["_id"], "not-an-id", 3)


async def test_inactive_and_unknown_recipients_are_skipped(ctx, town, sandbox, templates):
    people = await followers(ctx, town.org("branch_a1"), sandbox, 2)
    await ctx.db["members"].update_one({"_id": people[1]["_id"]}, {"$set": {"state": "deceased"}})
    result = await notify.notify(ctx, [*members_of(people), Recipient(member_id=ObjectId())],
                                 "test_event", data(), subject="event:e1")
    assert (result.created, result.skipped) == (1, 2)


async def test_a_big_fan_out_is_planned_and_written_by_the_workers(ctx, town, sandbox, templates):
    ctx.settings.notify.eager_limit = 3
    ctx.settings.notify.batch_size = 2
    people = await followers(ctx, town.org("branch_a1"), sandbox, 4)
    plain = (await new_members(ctx, town.org("branch_a2"), 1, "未关注"))[0]
    await ctx.db["members"].update_one({"_id": people[3]["_id"]}, {"$set": {"state": "deceased"}})
    result = await notify.notify(ctx, members_of([*people, plain]), "test_event", data(), subject="event:big")
    assert (result.planned, result.created) == (5, 0)  # queued as 3 batches, no document yet
    assert await queued_jobs(ctx) == 3
    await drain(ctx)
    docs = await ctx.db["notifications"].find({"owner": {"$in": [p["_id"] for p in [*people, plain]]}}).to_list()
    assert sorted(d["status"] for d in docs) == ["sent", "sent", "sent", "undeliverable"]
    assert len(await sandbox.outbox(kind="template")) == 3
    again = await notify.notify(ctx, members_of([*people, plain]), "test_event", data(), subject="event:big")
    assert again.planned == 5
    await drain(ctx)  # the workers find every recipient notified already
    assert len(await sandbox.outbox(kind="template")) == 3
    assert await ctx.db["notify_batches"].count_documents({"due_at": {"$gt": datetime(2000, 1, 1, tzinfo=UTC)}}) == 0
    day = ctx.clock.today().isoformat()
    stats = await stats_model.for_org(ctx.db, town.org("root"), [day])
    assert (stats[day]["total"], stats[day]["sent"], stats[day]["undeliverable"]) == (4, 3, 1)


async def test_outbox_pages_walk_a_day_by_status_and_subtree(ctx, town, sandbox, templates):
    from wxbackend.services.accounts.access import Actor, Role
    from wxbackend.services.notify import outbox

    east = await followers(ctx, town.org("branch_a1"), sandbox, 7, "东")
    west = await followers(ctx, town.org("branch_b1"), sandbox, 4, "西")
    quiet = await new_members(ctx, town.org("branch_a2"), 5, "未关注")
    await notify.notify(ctx, members_of([*east, *west, *quiet]), "test_event", data(), subject="event:p")
    await drain(ctx)
    admin = Actor(id=None, name="东区", roles=[Role("committee_admin", town.org("district_a"))])
    seen, cursor = [], None
    while True:
        page = await outbox.page(ctx, admin, town.org("district_a"), status="sent", cursor=cursor, limit=3)
        seen.extend(r["owner"] for r in page.rows)
        cursor = page.next_cursor
        if not cursor:
            break
    assert sorted(seen) == sorted(p["_id"] for p in east)  # all of the east, none of the west
    seen, cursor = [], None
    while True:
        page = await outbox.page(ctx, admin, town.org("district_a"), status="undeliverable",
                                 cursor=cursor, limit=2)
        seen.extend(r["owner"] for r in page.rows)
        cursor = page.next_cursor
        if not cursor:
            break
    assert sorted(seen) == sorted(p["_id"] for p in quiet)
    with pytest.raises(InvalidInput):
        await outbox.page(ctx, admin, town.org("district_a"), status="bogus")
    with pytest.raises(InvalidInput):
        await outbox.page(ctx, admin, town.org("district_a"), day="2025-13-01")
