"""Notices, inboxes, the outbox page and the digest, over HTTP where people use them."""

from __future__ import annotations

import re
import urllib.parse
from datetime import datetime

import httpx
import pytest

from models import notices as notices_model
from models import notifications as outbox_model
from models import users as users_model
from tests.conftest import ADMIN_PASSWORD, actor_of
from tests.notifykit import drain, followers, new_members, use_templates
from wxbackend.capability import Capability
from wxbackend.errors import Forbidden, InvalidInput
from wxbackend.services import notify, orgs
from wxbackend.services.notify import Kind, Recipient, digest, notices, notify_delivery, outbox

API = "/api/v1"
TEMPLATE_API = "/cgi-bin/message/template/send"


@pytest.fixture
def templates(ctx):
    use_templates(ctx)


async def login_member(api, sandbox, member, openid):
    """A member bound to the mini-program, signed in through it."""
    await ctx_bind(api, member, openid)
    code = await sandbox.login_code(openid)
    response = await api.post(f"{API}/auth/login", json={"code": code})
    assert response.status_code == 200, response.text
    assert response.json()["bound"] is True
    return {"Authorization": f"Bearer {response.json()['token']}"}


async def ctx_bind(api, member, openid):
    await api.app_ctx.db["members"].update_one({"_id": member["_id"]}, {"$set": {"mp_openid": openid}})


@pytest.fixture
async def api(server_url, ctx):
    async with httpx.AsyncClient(base_url=server_url, timeout=30) as client:
        client.app_ctx = ctx
        yield client


async def test_a_committee_notice_reaches_its_subtree_through_the_queue(ctx, city, web, api, sandbox,
                                                                       templates):
    reached = await followers(ctx, city.org("branch_a1"), sandbox, 3)
    unreachable = await new_members(ctx, city.org("branch_a2"), 2, "未关注")
    elsewhere = await followers(ctx, city.org("branch_b1"), sandbox, 1, "西区")
    await web.login("east", ADMIN_PASSWORD)
    sent = await web.post_form("/admin/notices", {"org": str(city.org("district_a")), "audience": "members",
                                                  "title": "关于开展主题党日活动的通知", "body": "请各支部按时组织。\n地点另行通知。"})
    assert sent.status_code == 302, sent.text
    notice_id = re.search(r"/admin/notices/([0-9a-f]{24})", sent.headers["Location"]).group(1)
    await drain(ctx)
    notice = await notices_model.get(ctx.db, notices.parse_id(notice_id))
    assert notice["state"] == "sent"
    assert notice["counts"] == {"recipients": 5, "delivered": 3, "inbox": 2, "failed": 0, "read": 0}
    messages = await sandbox.outbox(kind="template")
    assert sorted(m["openid"] for m in messages) == sorted(p["oa_openid"] for p in reached)
    assert elsewhere[0]["oa_openid"] not in {m["openid"] for m in messages}
    assert messages[0]["body"]["data"]["thing1"]["value"] == "关于开展主题党日活动的通知"
    page = await web.get(f"/admin/notices/{notice_id}")
    assert page.status_code == 200 and "已送达" in page.text and "请各支部按时组织" in page.text

    # A member without WeChat reads it in the mini-program: the read receipt counts.
    headers = await login_member(api, sandbox, unreachable[0], "oMiniReader")
    listed = await api.get(f"{API}/me/notifications", headers=headers)
    assert listed.status_code == 200, listed.text
    [item] = listed.json()["items"]
    assert (item["kind"], item["read"], item["title"]) == ("notice", False, "通知公告：关于开展主题党日活动的通知")
    detail = await api.get(f"{API}/me/notifications/{item['id']}", headers=headers)
    assert detail.json()["body"] == "请各支部按时组织。\n地点另行通知。" and detail.json()["sender"] == "东区区委"
    read = await api.post(f"{API}/me/notifications/{item['id']}/read", headers=headers)
    assert read.status_code == 200 and read.json()["read"] is True
    await api.post(f"{API}/me/notifications/{item['id']}/read", headers=headers)  # twice: one reader
    notice = await notices_model.get(ctx.db, notices.parse_id(notice_id))
    assert notice["counts"]["read"] == 1
    listing = await web.get(f"/admin/notices?org={city.org('district_a')}")
    assert "关于开展主题党日活动的通知" in listing.text


async def test_notice_rules_and_scope(ctx, city, templates):
    west = actor_of(city, "west")
    with pytest.raises(Forbidden):
        await notices.send(ctx, west, city.org("district_a"), "members", "标题", "正文")
    with pytest.raises(Forbidden):
        await notices.send(ctx, actor_of(city, "auditor_a"), city.org("district_a"), "members", "标题", "正文")
    for audience, title, body in [("everyone", "标题", "正文"), ("members", "", "正文"),
                                  ("members", "长" * 41, "正文"), ("members", "标题", " ")]:
        with pytest.raises(InvalidInput):
            await notices.send(ctx, actor_of(city, "east"), city.org("district_a"), audience, title, body)
    assert await notices.page(ctx, actor_of(city, "east"), city.org("district_a")) == ([], None)


async def test_a_notice_to_the_secretaries(ctx, city, sandbox, templates):
    chief = (await followers(ctx, city.org("branch_a1"), sandbox, 1, "书记"))[0]
    await orgs.set_leadership(ctx, actor_of(city, "east"), city.org("branch_a1"), committee=[],
                              secretary_id=chief["_id"])
    await followers(ctx, city.org("branch_a1"), sandbox, 2, "普通")
    notice = await notices.send(ctx, actor_of(city, "city"), city.org("root"), "secretaries",
                                "关于换届工作的通知", "请各支部书记做好准备。")
    await drain(ctx)
    notice = await notices_model.get(ctx.db, notice["_id"])
    # The branch's 书记 (a member, by WeChat) and the secretary account sec_a1 (web inbox).
    assert notice["counts"]["recipients"] == 2 and notice["counts"]["delivered"] == 2
    assert [m["openid"] for m in await sandbox.outbox(kind="template")] == [chief["oa_openid"]]
    items, _ = await notify.inbox(ctx, city.users["sec_a1"]["_id"], None, 10)
    assert [i.doc["kind"] for i in items] == ["notice"]


async def test_the_outbox_page_shows_failures_with_wechats_error_and_retries_them(ctx, city, web, sandbox,
                                                                                 templates):
    ctx.settings.notify.max_attempts = 1
    ctx.settings.wechat.api_retries = 0
    await followers(ctx, city.org("branch_a1"), sandbox, 2)
    await sandbox.fault(TEMPLATE_API, errcode=-1, times=2)
    notice = await notices.send(ctx, actor_of(city, "east"), city.org("branch_a1"), "members", "学习通知", "请学习。")
    await drain(ctx)
    assert (await notices_model.get(ctx.db, notice["_id"]))["counts"]["failed"] == 2
    await web.login("sec_a1", ADMIN_PASSWORD)
    page = await web.get("/admin/outbox?status=failed")
    assert page.status_code == 200
    assert page.text.count('<span class="tag bad">失败</span>') == 2
    assert page.text.count("微信系统繁忙") == 2 and "微信错误码 -1" in page.text
    assert "学习通知" in page.text
    ids = re.findall(r'name="id" value="([0-9a-f]{24})"', page.text)
    retried = await web.post_form("/admin/outbox/retry", {"id": ids, "next": "/admin/outbox?status=failed"})
    assert retried.status_code == 302 and "status=failed" in retried.headers["Location"]
    await drain(ctx)
    assert (await notices_model.get(ctx.db, notice["_id"]))["counts"] == {
        "recipients": 2, "delivered": 2, "inbox": 0, "failed": 0, "read": 0}
    page = await web.get("/admin/outbox")
    assert 'id="day-counts"' in page.text and "已送达" in page.text
    by_code = await web.get("/admin/outbox?code=A1&status=sent")
    assert by_code.status_code == 200 and by_code.text.count("已送达</td>") == 2
    assert (await web.get("/admin/outbox?code=B1")).status_code == 403  # outside the secretary's branch
    assert (await web.get("/admin/outbox?code=NOPE")).status_code == 400
    # An auditor sees the outbox but may not retry.
    await sandbox.fault(TEMPLATE_API, errcode=-1, times=1)
    await notices.send(ctx, actor_of(city, "east"), city.org("branch_a1"), "members", "再次通知", "请学习。")
    await drain(ctx)
    await web.post_form("/admin/logout")
    web.cookies.clear()
    await web.login("auditor_a", ADMIN_PASSWORD)
    page = await web.get(f"/admin/outbox?org={city.org('branch_a1')}&status=failed")
    assert page.status_code == 200 and '<span class="tag bad">失败</span>' in page.text
    assert 'formaction="/admin/outbox/' not in page.text and 'name="id"' not in page.text
    failed = await ctx.db["notifications"].find_one({"status": "failed", "next_at": {"$gt": datetime(2000, 1, 1)}})
    refused = await web.post_form(f"/admin/outbox/{failed['_id']}/retry", {})
    assert refused.status_code == 403
    assert (await outbox_model.get(ctx.db, failed["_id"]))["status"] == "failed"


async def test_a_permanent_failure_reads_as_chinese_advice_without_a_retry_button(ctx, city, web, sandbox,
                                                                                 templates):
    ctx.settings.notify.max_attempts = 1
    ctx.settings.wechat.api_retries = 0
    known = await followers(ctx, city.org("branch_a1"), sandbox, 1)
    stranger = await followers(ctx, city.org("branch_a2"), None, 1, "陌生")  # WeChat never heard of them
    east = actor_of(city, "east")
    await sandbox.fault(TEMPLATE_API, errcode=-1, times=1)  # WeChat is busy once
    busy = await notices.send(ctx, east, city.org("branch_a1"), "members", "学习通知", "请学习。")
    await drain(ctx)
    gone = await notices.send(ctx, east, city.org("branch_a2"), "members", "学习通知", "请学习。")
    await drain(ctx)
    rows = {}
    for notice, person in ((busy, known[0]), (gone, stranger[0])):
        assert (await notices_model.get(ctx.db, notice["_id"]))["counts"]["failed"] == 1
        [rows[person["_id"]]] = await ctx.db["notifications"].find({"owner": person["_id"]}).to_list()
    assert rows[stranger[0]["_id"]]["errcode"] == 40003 and rows[known[0]["_id"]]["errcode"] == -1
    await web.login("east", ADMIN_PASSWORD)
    page = (await web.get("/admin/outbox?status=failed")).text
    assert "该微信用户已不存在或未关注公众号" in page and "请核对绑定或让党员重新绑定" in page
    assert "微信错误码 40003" in page and "invalid openid" not in page and "rid:" not in page
    assert "微信系统繁忙" in page
    # Only the busy one can be sent again: a checkbox and a button for it, none for 40003.
    offered = re.findall(r'name="id" value="([0-9a-f]{24})"', page)
    assert offered == [str(rows[known[0]["_id"]]["_id"])]
    assert page.count('formaction="/admin/outbox/') == 1
    assert f'/admin/outbox/{rows[stranger[0]["_id"]]["_id"]}/retry' not in page
    # A hand-made retry of the permanent failure is refused and changes nothing, and a
    # bulk retry that includes it says so rather than skipping it in silence ...
    gone_row = rows[stranger[0]["_id"]]
    bulk = await web.post_form("/admin/outbox/retry", {"id": [str(r["_id"]) for r in rows.values()]})
    said = urllib.parse.unquote(bulk.headers["location"])
    assert "已重新发送1条" in said and "1条重新发送也不会成功" in said
    answer = await web.post_form(f"/admin/outbox/{gone_row['_id']}/retry")
    assert answer.status_code == 409 and "重新发送不会成功" in answer.text
    assert (await ctx.db["notifications"].find_one({"_id": gone_row["_id"]}))["status"] == "failed"
    # ... until the member is bound to another openid, which a retry then reaches.
    await ctx.db["members"].update_one({"_id": stranger[0]["_id"]}, {"$set": {"oa_openid": "oNowKnown"}})
    await sandbox.follow("oNowKnown")
    await outbox.retry(ctx, east, gone_row["_id"])
    assert (await ctx.db["notifications"].find_one({"_id": gone_row["_id"]}))["openid"] == "oNowKnown"


def test_every_errcode_reads_as_chinese_with_advice():
    from wxbackend.wechat import errors

    for errcode in [*errors.ADVICE, *errors.ERRCODE_CLASSES]:
        advice = errors.explain(errcode)
        chinese = re.compile(r"[\u4e00-\u9fff]")
        assert chinese.search(advice.text) and chinese.search(advice.advice), errcode
        assert "invalid" not in str(advice).lower(), errcode
    assert not errors.explain(40003).retry_helps and not errors.explain(40037).retry_helps
    assert errors.explain(-1).retry_helps and errors.explain(45009).retry_helps
    unknown = errors.explain(61234)
    assert "61234" in unknown.text and "微信" in unknown.text and unknown.retry_helps
    assert not errors.explain(40169).retry_helps  # a malformed request fails again as it is


async def test_outbox_scope_and_pause_resume(ctx, city, web, sandbox, templates):
    await notify_delivery.pause(ctx, notify_delivery.API_OA, "45009 reach max api daily quota limit")
    await web.login("west", ADMIN_PASSWORD)
    assert (await web.get(f"/admin/outbox?org={city.org('district_a')}")).status_code == 403
    page = await web.get("/admin/outbox")
    assert "公众号模板消息已暂停" in page.text and "恢复发送" not in page.text
    assert (await web.post_form("/admin/outbox/resume", {"api": "oa_template"})).status_code == 403
    await web.post_form("/admin/logout")
    web.cookies.clear()
    await web.login("city", ADMIN_PASSWORD)
    page = await web.get("/admin/outbox")
    assert "恢复发送" in page.text
    resumed = await web.post_form("/admin/outbox/resume", {"api": "oa_template"})
    assert resumed.status_code == 302
    assert await notify_delivery.paused_until(ctx, notify_delivery.API_OA) is None


async def test_admin_inbox_marks_read(ctx, city, web, templates):
    await notify.notify(ctx, [Recipient(user_id=city.users["sec_a1"]["_id"])], "notice",
                        {"title": "测试", "org": "东区区委", "sent_at": ctx.clock.now(), "notice_id": "x",
                         "excerpt": "内容"}, subject="notice:x")
    await web.login("sec_a1", ADMIN_PASSWORD)
    inbox = await web.get("/admin/inbox")
    assert "未读" in inbox.text and "通知公告：测试" in inbox.text
    item_id = re.search(r'/admin/inbox/([0-9a-f]{24})', inbox.text).group(1)
    assert (await web.get(f"/admin/inbox/{item_id}")).status_code == 200
    assert "已读" in (await web.get("/admin/inbox")).text
    await web.post_form("/admin/logout")
    web.cookies.clear()
    await web.login("east", ADMIN_PASSWORD)
    assert (await web.get(f"/admin/inbox/{item_id}")).status_code == 404  # not theirs


async def test_subscriptions_are_recorded_and_used(ctx, city, api, sandbox, templates):
    member = (await new_members(ctx, city.org("branch_a1"), 1))[0]
    headers = await login_member(api, sandbox, member, "oMiniSub")
    listed = await api.get(f"{API}/me/subscriptions", headers=headers)
    assert {"kind": "notice", "title": "通知公告", "template_id": "TPL_NOTICE_MP", "granted": 0} in listed.json()["items"]
    refused = await api.post(f"{API}/me/subscriptions", headers=headers, json={"template_ids": ["TPL_OTHER"]})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "unknown_template"
    granted = await api.post(f"{API}/me/subscriptions", headers=headers, json={"template_ids": ["TPL_NOTICE_MP"]})
    assert {"kind": "notice", "title": "通知公告", "template_id": "TPL_NOTICE_MP", "granted": 1} in granted.json()["items"]
    await sandbox.http.post("/sandbox/mp/users/oMiniSub/grant-subscribe", json={"template_id": "TPL_NOTICE_MP"})
    await notices.send(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), "members", "支部通知", "正文")
    await drain(ctx)
    assert [m["openid"] for m in await sandbox.outbox(kind="subscribe")] == ["oMiniSub"]
    bad = await api.get(f"{API}/me/notifications?cursor=zzz", headers=headers)
    assert bad.status_code == 400
    missing = await api.post(f"{API}/me/notifications/{'0' * 24}/read", headers=headers)
    assert missing.status_code == 404


# -- the digest ----------------------------------------------------------------------------

DIGESTED = Kind(name="test_pending", title="待审批事项", template_setting="test_pending",
                fields={"thing1": "{title}"}, required=("title",), digest=True)


@pytest.fixture
def extra_capabilities():
    return (Capability("test_digest", kinds=(DIGESTED,)),)


async def test_a_secretary_gets_one_digest_a_day(ctx, city, sandbox, templates):
    secretary = city.users["sec_a1"]
    chief = (await followers(ctx, city.org("branch_a1"), sandbox, 1, "书记"))[0]
    await users_model.update(ctx.db, secretary["_id"], {"$set": {"member_id": chief["_id"]}})
    await new_members(ctx, city.org("branch_a1"), 2, "未绑定")
    ctx.settings.notify.test_pending_oa_template_id = "TPL_PENDING"
    # A digest kind does not interrupt the secretary: it waits in the inbox for the digest.
    waiting = await notify.notify(ctx, [Recipient(user_id=secretary["_id"])], "test_pending",
                                  {"title": "请假申请"}, subject="leave:1")
    assert waiting.web == 1 and waiting.queued == 0
    assert await digest.schedule_digests(ctx) == 1
    await drain(ctx)
    [message] = await sandbox.outbox(kind="template")
    assert message["openid"] == chief["oa_openid"]
    assert message["body"]["data"]["thing1"]["value"].startswith("您有")
    assert message["body"]["url"].endswith("/admin/inbox")
    items, _ = await notify.inbox(ctx, secretary["_id"], None, 10)
    text = items[0].message["summary"]
    assert "东区第一党支部2名党员尚未绑定微信" in text and "1条新通知" in text
    pending = await outbox_model.get(ctx.db, waiting.ids[0])
    assert pending["digest"] == "done"
    # The same day again: nothing new (the subject is digest:<user>:<day>).
    day = ctx.clock.today().isoformat()
    again = await digest.send_digest(ctx, await users_model.get(ctx.db, secretary["_id"]), day)
    assert again is not None and again.created == 0 and again.duplicates == 1
    await drain(ctx)
    assert len(await sandbox.outbox(kind="template")) == 1


async def test_urgent_kinds_skip_the_digest(ctx, city, sandbox, templates):
    chief = (await followers(ctx, city.org("branch_a1"), sandbox, 1, "书记"))[0]
    await users_model.update(ctx.db, city.users["sec_a1"]["_id"], {"$set": {"member_id": chief["_id"]}})
    ctx.settings.notify.test_pending_oa_template_id = "TPL_PENDING"
    ctx.settings.notify.urgent_kinds = "test_pending"
    result = await notify.notify(ctx, [Recipient(user_id=city.users["sec_a1"]["_id"])], "test_pending",
                                 {"title": "紧急"}, subject="leave:2")
    assert result.queued == 1
    await drain(ctx)
    assert [m["openid"] for m in await sandbox.outbox(kind="template")] == [chief["oa_openid"]]
