"""End to end through the sandbox: a member follows, binds on the OAuth page, chats.

The sandbox plays WeChat: its users call our ``/wechat/oa`` signed and
encrypted, its OAuth page redirects to our binding page with a code, and its
API records the customer-service messages we send (and injects faults).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from models import members as members_model
from tests.conftest import SYSTEM, actor_of
from tests.factories import member_fields
from tests.webclient import WebClient
from wxbackend.capability import Capability, ChatRoute
from wxbackend.services import orgs
from wxbackend.services.orgs import members
from wxbackend.wechat import background
from wxbackend.wechat.router import Text, router_of

MENU_FILE = Path(__file__).resolve().parents[2] / "config" / "menu.json"


async def _late(ctx, msg):
    await asyncio.sleep(0.6)
    return Text("这是迟到的回复")


@pytest.fixture
def extra_capabilities():
    return (Capability("test_chat", chat=(ChatRoute.keyword("测试迟到", _late),)),)


@pytest.fixture
async def wechat(ctx, sandbox, oa_url):
    """The sandbox's users talk to our server; returns the sandbox."""
    sandbox.config.callback_url = oa_url + "/wechat/oa"
    return sandbox


async def act(sandbox, openid: str, action: str, **body) -> dict:
    answer = await sandbox.http.post(f"/sandbox/users/{openid}/{action}", json=body)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["error"] is None, result  # WeChat would accept our answer
    return result


async def bind_through_oauth(sandbox, oa_url: str, openid: str, form: dict) -> str:
    """The member taps the binding link inside WeChat and submits the form."""
    browser = WebClient(oa_url)
    try:
        start = await browser.get("/wechat/oa/bind")
        assert start.status_code == 302
        authorize = start.headers["location"]
        assert authorize.startswith(sandbox.url + "/connect/oauth2/authorize?")
        base, _, fragment = authorize.partition("#")
        assert fragment == "wechat_redirect"
        back = await sandbox.http.get(f"{base}&sandbox_openid={openid}")  # WeChat's client
        assert back.status_code == 302
        target = urlsplit(back.headers["location"])
        returned = await browser.get(f"{target.path}?{target.query}")
        assert returned.status_code == 302 and returned.headers["location"] == "/wechat/oa/bind"
        page = await browser.get("/wechat/oa/bind")
        assert page.status_code == 200 and "绑定党员身份" in page.text
        done = await browser.post_form("/wechat/oa/bind", form)
        # The code was used: replaying the OAuth return fails at WeChat (40163).
        replay = await browser.get(f"{target.path}?{target.query}")
        assert replay.status_code in (400, 503)
        return done.text
    finally:
        await browser.close()


async def test_a_member_follows_binds_and_asks_for_the_branch(ctx, city, wechat, oa_url):
    raw = member_fields("黄海")
    member = await members.create(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), raw)
    secretary = await members.create(ctx, SYSTEM, city.org("branch_a1"), member_fields("许书记"))
    await orgs.set_leadership(ctx, SYSTEM, city.org("branch_a1"), secretary_id=secretary["_id"],
                              committee=[])

    welcome = await act(wechat, "oHuang", "subscribe")
    assert "欢迎关注" in welcome["reply"]["Content"]
    assert f"{oa_url}/wechat/oa/bind" in welcome["reply"]["Content"]
    before = await act(wechat, "oHuang", "say", content="我的支部")
    assert "还没有绑定" in before["reply"]["Content"]

    page = await bind_through_oauth(wechat, oa_url, "oHuang",
                                    {"name": raw["name"], "id_card": raw["id_card"], "phone": raw["phone"]})
    assert "绑定成功" in page
    doc = await members_model.get(ctx.db, member["_id"])
    assert doc["oa_openid"] == "oHuang" and doc["oa_following"] is True  # carried over

    branch = await act(wechat, "oHuang", "say", content="我的支部")
    content = branch["reply"]["Content"]
    assert "东区第一党支部" in content and "许书记" in content and "在册党员：2名" in content
    clicked = await act(wechat, "oHuang", "click", key="MY_BRANCH")
    assert clicked["reply"]["Content"] == content
    helped = await act(wechat, "oHuang", "say", content="帮助")
    assert "【我的支部】" in helped["reply"]["Content"] and "点此绑定" not in helped["reply"]["Content"]
    bound = await act(wechat, "oHuang", "click", key="BIND")
    assert "您已绑定为黄海" in bound["reply"]["Content"]

    left = await act(wechat, "oHuang", "unsubscribe")
    assert left["reply"] is None and left["body"] == "success"
    assert (await members_model.get(ctx.db, member["_id"]))["oa_following"] is False


async def test_wrong_data_on_the_oauth_page_then_right(ctx, city, wechat, oa_url):
    raw = member_fields("钱锋")
    await members.create(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), raw)
    await act(wechat, "oQian", "subscribe")
    page = await bind_through_oauth(wechat, oa_url, "oQian",
                                    {"name": "钱峰", "id_card": raw["id_card"], "phone": raw["phone"]})
    assert "还可尝试4次" in page
    page = await bind_through_oauth(wechat, oa_url, "oQian",
                                    {"name": "钱锋", "id_card": raw["id_card"], "phone": raw["phone"]})
    assert "绑定成功" in page


@pytest.mark.skipif(not MENU_FILE.exists(), reason="config/menu.json comes with the menu command")
async def test_every_click_key_of_the_menu_has_a_handler(ctx, wechat):
    menu = json.loads(MENU_FILE.read_text())
    keys = [b["key"] for top in menu["button"] for b in top.get("sub_button") or [top] if "key" in b]
    assert keys
    assert [k for k in keys if k not in router_of(ctx).menu_keys] == []
    await act(wechat, "oMenu", "subscribe")
    for key in keys:
        assert (await act(wechat, "oMenu", "click", key=key))["reply"]["MsgType"] == "text"


async def test_a_late_reply_arrives_as_a_customer_service_message(ctx, wechat):
    ctx.settings.wechat.callback_budget_seconds = 0.2
    await act(wechat, "oLate", "subscribe")
    result = await act(wechat, "oLate", "say", content="测试迟到")
    assert result["body"] == "success" and result["attempts"] == 1
    await background.drain(ctx)
    sent = await wechat.outbox(openid="oLate", kind="custom")
    assert [m["body"]["text"]["content"] for m in sent] == ["这是迟到的回复"]


@pytest.mark.parametrize("fault", [
    {"errcode": 45009, "times": 5},      # daily quota used up
    {"errcode": 40001, "times": 5},      # token refused, also after one refresh
    {"errcode": -1, "times": 5},         # system busy, also after the retries
    {"delay_seconds": 1.5, "times": 5},  # WeChat does not answer in time
], ids=["45009", "40001", "-1", "timeout"])
async def test_a_failing_customer_service_send_is_logged_not_raised(ctx, wechat, fault, caplog):
    caplog.set_level(logging.INFO)
    ctx.settings.wechat.callback_budget_seconds = 0.2
    ctx.settings.wechat.api_timeout_seconds = 0.5
    ctx.settings.wechat.api_retries = 1
    await act(wechat, "oFault", "subscribe")
    await wechat.fault("/cgi-bin/message/custom/send", **fault)
    result = await act(wechat, "oFault", "say", content="测试迟到")
    assert result["body"] == "success"
    await background.drain(ctx)
    assert await wechat.outbox(openid="oFault", kind="custom") == []
    failed = [r for r in caplog.records if r.getMessage() == "late reply not delivered"]
    assert len(failed) == 1
    if "errcode" in fault:
        assert failed[0].fields["errcode"] == fault["errcode"]
    # The server is fine: the next message is answered at once.
    ctx.settings.wechat.callback_budget_seconds = 3.0
    again = await act(wechat, "oFault", "say", content="帮助")
    assert "【帮助】" in again["reply"]["Content"]


async def test_the_url_check_of_the_configuration_page(ctx, wechat):
    answer = await wechat.http.post("/sandbox/verify")
    assert answer.status_code == 200, answer.text
    assert answer.json()["ok"] is True, answer.text
