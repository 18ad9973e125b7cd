"""What a member sees when chatting with the official account, through the real callback."""

from __future__ import annotations

import asyncio
import time

from models import members as members_model
from models import wechat as followers_model
from tests.conftest import SYSTEM, actor_of
from tests.factories import member_fields
from tests.wechat.helpers import (
    event_xml,
    say,
    text_xml,
)
from wxbackend.services import orgs
from wxbackend.services.orgs import binding, members
from wxbackend.services.orgs.chat import BranchCards


async def bound_member(ctx, city, openid: str, name: str = "李红", **fields) -> dict:
    raw = member_fields(name, gender="女", **fields)
    member = await members.create(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), raw)
    await binding.bind(ctx, "oa", openid, None, name, raw["id_card"], raw["phone"], "127.0.0.1")
    return member


async def test_follow_unbound_gets_welcome_and_binding_link(ctx, oa_url):
    reply = await say(oa_url, event_xml("o-new", "subscribe"))
    assert "欢迎关注" in reply["Content"]
    assert f'<a href="{oa_url}/wechat/oa/bind">' in reply["Content"]
    follower = await followers_model.get(ctx.db, "o-new")
    assert follower["following"] is True and follower["scene"] is None


async def test_unfollow_is_recorded_and_answered_success(ctx, oa_url):
    await say(oa_url, event_xml("o-leave", "subscribe", create_time=int(time.time()) - 5))
    assert await say(oa_url, event_xml("o-leave", "unsubscribe")) is None
    follower = await followers_model.get(ctx.db, "o-leave")
    assert follower["following"] is False and follower["unfollowed_at"] is not None


async def test_bound_member_follow_and_unfollow_are_kept_on_the_member(ctx, city, oa_url):
    member = await bound_member(ctx, city, "o-bound")
    reply = await say(oa_url, event_xml("o-bound", "subscribe"))
    assert reply["Content"].startswith("李红同志，欢迎回来")
    assert "点此绑定" not in reply["Content"]
    doc = await members_model.get(ctx.db, member["_id"])
    assert doc["oa_following"] is True
    assert await followers_model.get(ctx.db, "o-bound") is None
    await say(oa_url, event_xml("o-bound", "unsubscribe"))
    doc = await members_model.get(ctx.db, member["_id"])
    assert doc["oa_following"] is False and doc["oa_unfollowed_at"] is not None
    assert doc["oa_openid"] == "o-bound"  # unfollowing does not unbind


async def test_my_branch_answers_from_the_members_own_data(ctx, city, oa_url):
    member = await bound_member(ctx, city, "o-branch")
    secretary = await members.create(ctx, SYSTEM, city.org("branch_a1"), member_fields("王书记"))
    await orgs.set_leadership(ctx, SYSTEM, city.org("branch_a1"), secretary_id=secretary["_id"],
                              committee=[])
    await members.create(ctx, SYSTEM, city.org("branch_a1"),
                         member_fields("赵预备", party_status="预备党员", full_on=""))
    for ask in (text_xml("o-branch", " 我的支部 "), event_xml("o-branch", "CLICK", "MY_BRANCH")):
        content = (await say(oa_url, ask))["Content"]
        assert "所在党组织：东区第一党支部" in content
        assert "支部书记：王书记" in content
        assert "在册党员：3名（正式党员2名）" in content  # the maintained counters
        assert "您的身份：正式党员" in content
    assert member["name"] == "李红"


async def test_my_branch_without_binding_offers_the_link(ctx, oa_url):
    content = (await say(oa_url, text_xml("o-stranger", "我的支部")))["Content"]
    assert "还没有绑定" in content and "/wechat/oa/bind" in content


async def test_my_branch_of_a_transferred_member_says_so(ctx, city, oa_url):
    member = await bound_member(ctx, city, "o-gone")
    await members.set_state(ctx, SYSTEM, member["_id"], "transferred_out")
    content = (await say(oa_url, text_xml("o-gone", "我的支部")))["Content"]
    assert "已转出" in content and "东区第一党支部" not in content


async def test_bind_keyword_and_menu(ctx, city, oa_url):
    assert "/wechat/oa/bind" in (await say(oa_url, text_xml("o-kw", "绑定")))["Content"]
    await bound_member(ctx, city, "o-kw2", name="周明")
    for ask in (text_xml("o-kw2", "绑定"), event_xml("o-kw2", "CLICK", "BIND")):
        assert "您已绑定为周明" in (await say(oa_url, ask))["Content"]


async def test_help_and_unknown_text_get_help_not_silence(ctx, oa_url):
    for ask in ("帮助", "你好", "党费", "学习"):
        content = (await say(oa_url, text_xml("o-help", ask)))["Content"]
        assert "【我的支部】" in content and "【帮助】" in content
        # No keyword for capabilities that do not exist yet (dues, study).
        assert "党费" not in content and "学习" not in content


async def test_unknown_menu_key_and_pictures_get_help(ctx, oa_url):
    assert "【帮助】" in (await say(oa_url, event_xml("o-m", "CLICK", "NEWER_THAN_US")))["Content"]
    image = text_xml("o-m", "x").replace("<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[x]]></Content>",
                                         "<MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[http://p]]></PicUrl>"
                                         "<MediaId><![CDATA[m1]]></MediaId>")
    assert "暂时无法识别" in (await say(oa_url, image))["Content"]


async def test_reply_text_cannot_break_out_of_cdata(ctx, city, oa_url):
    await orgs.rename(ctx, SYSTEM, city.org("branch_a1"), "支部]]><Evil>x</Evil>")
    await bound_member(ctx, city, "o-cdata")
    content = (await say(oa_url, text_xml("o-cdata", "我的支部")))["Content"]
    assert "所在党组织：支部]]><Evil>x</Evil>" in content


async def test_branch_card_is_reused_briefly_then_refreshed(ctx, city, oa_url, monkeypatch):
    ctx.state(BranchCards).cards = BranchCards(ttl=0.5).cards
    await bound_member(ctx, city, "o-card")
    first = (await say(oa_url, text_xml("o-card", "我的支部")))["Content"]
    assert "在册党员：1名" in first
    await members.create(ctx, SYSTEM, city.org("branch_a1"), member_fields("新党员"))
    again = (await say(oa_url, text_xml("o-card", "我的支部")))["Content"]
    assert again == first  # within the TTL: no database read
    await asyncio.sleep(0.6)
    later = (await say(oa_url, text_xml("o-card", "我的支部")))["Content"]
    assert "在册党员：2名" in later
