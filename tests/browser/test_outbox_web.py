"""消息发送记录 in the browser: a failure reads as Chinese with what to do, and only a
failure that sending again can cure offers 重新发送, which then delivers it."""

from __future__ import annotations

from playwright.async_api import expect

from tests.browser.conftest import login
from tests.conftest import actor_of
from tests.notifykit import drain, followers, use_templates
from wxbackend.services.notify import notices

TEMPLATE_API = "/cgi-bin/message/template/send"


async def test_a_committee_reads_why_a_message_failed_and_sends_the_curable_one_again(
        page, ctx, city, sandbox):
    use_templates(ctx)
    ctx.settings.notify.max_attempts = 1
    ctx.settings.wechat.api_retries = 0
    known = await followers(ctx, city.org("branch_a1"), sandbox, 1, "刘")
    await followers(ctx, city.org("branch_a2"), None, 1, "吴")   # unknown to WeChat
    east = actor_of(city, "east")
    # One notice at a time, so that the busy answer meets the member WeChat knows.
    await sandbox.fault(TEMPLATE_API, errcode=-1, times=1)
    await notices.send(ctx, east, city.org("branch_a1"), "members", "学习通知", "请按时参加学习。")
    await drain(ctx)
    await notices.send(ctx, east, city.org("branch_a2"), "members", "学习通知", "请按时参加学习。")
    await drain(ctx)

    await login(page, "east")
    await page.goto("/admin/outbox?status=failed")
    rows = page.locator("#outbox-rows tr")
    await expect(rows).to_have_count(3)                                   # heading + two failures
    busy = rows.filter(has_text="微信系统繁忙")
    gone = rows.filter(has_text="该微信用户已不存在或未关注公众号")
    await expect(gone).to_contain_text("请核对绑定或让党员重新绑定")
    await expect(gone.get_by_role("button", name="重新发送")).to_have_count(0)
    await expect(busy.get_by_role("button", name="重新发送")).to_have_count(1)
    assert "invalid openid" not in await page.content()

    await busy.get_by_role("button", name="重新发送").click()
    await expect(page.get_by_text("已重新发送")).to_be_visible()
    await drain(ctx)
    await page.goto("/admin/outbox?status=failed")
    await expect(rows).to_have_count(2)
    await expect(rows.filter(has_text="该微信用户已不存在")).to_have_count(1)
    [delivered] = await ctx.db["notifications"].find({"owner": known[0]["_id"]}).to_list()
    assert delivered["status"] == "sent"
