"""The demo's WeChat knows the demo's bound members, on every start; its console is quiet.

The sandbox keeps its users in memory, so after a restart of ``make run`` it
would answer 40003 to every message for a member bound before: the demo tells
it again who follows the official account and who uses the mini-program (with
the subscribe grants our database records).
"""

from __future__ import annotations

import pytest

from models import members as members_model
from models import notices as notices_model
from models import notify_grants as grants_model
from tests.conftest import actor_of, make_settings
from tests.notifykit import MP_TEMPLATE, drain, followers, new_members, use_templates
from wxbackend.cli import demo_log_level
from wxbackend.demo import notify_demo
from wxbackend.services.notify import notices


@pytest.fixture
def templates(ctx):
    use_templates(ctx)


async def test_a_fresh_sandbox_learns_every_bound_member_and_delivers_to_them(ctx, city, sandbox, templates):
    # Bound in our database, unknown to the (just restarted) sandbox.
    following = await followers(ctx, city.org("branch_a1"), None, 2)
    [gone] = await followers(ctx, city.org("branch_a1"), None, 1, "取关")
    await members_model.bulk_update(ctx.db, [(gone["_id"], {"oa_following": False})])
    [mini] = await new_members(ctx, city.org("branch_a1"), 1, "小程序")
    await members_model.bulk_update(ctx.db, [(mini["_id"], {"mp_openid": "oMpDemo1", "unionid": "oUnionDemo1"})])
    await grants_model.add(ctx.db, mini["_id"], [MP_TEMPLATE, MP_TEMPLATE], ctx.clock.now())
    assert sandbox.world.oa_users == {} and sandbox.world.mp_users == {}

    assert await notify_demo.introduce_bound_members(ctx, ctx.settings) == 4
    users = sandbox.world.oa_users
    assert {p["oa_openid"] for p in following} | {gone["oa_openid"]} == set(users)
    assert all(users[p["oa_openid"]].following for p in following)
    assert users[gone["oa_openid"]].following is False
    assert sandbox.world.mp_users["oMpDemo1"].unionid == "oUnionDemo1"
    assert dict(sandbox.world.mp_users["oMpDemo1"].grants) == {MP_TEMPLATE: 2}

    notice = await notices.send(ctx, actor_of(city, "east"), city.org("branch_a1"), "members",
                                "学习通知", "请学习。")
    await drain(ctx)
    counts = (await notices_model.get(ctx.db, notice["_id"]))["counts"]
    assert counts["failed"] == 0 and counts["delivered"] >= 3
    sent = {m["openid"] for m in await sandbox.outbox(kind="template")}
    assert sent == {p["oa_openid"] for p in following}
    assert [m["openid"] for m in await sandbox.outbox(kind="subscribe")] == ["oMpDemo1"]
    # A second start tells the sandbox the same again, grants as our database counts them.
    assert await notify_demo.introduce_bound_members(ctx, ctx.settings) == 4
    assert dict(sandbox.world.mp_users["oMpDemo1"].grants) == {MP_TEMPLATE: 1}


@pytest.mark.parametrize("environ, flag, level", [
    ({}, False, "WARNING"),                              # make run: quiet
    ({}, True, "INFO"),                                  # serve --demo --verbose
    ({"WXB_LOG_VERBOSE": "1"}, False, "INFO"),           # WXB_LOG_VERBOSE=1 make run
    ({"WXB_LOG_LEVEL": "DEBUG"}, False, "DEBUG"),        # asked for more, not less
    ({"WXB_LOG_LEVEL": "ERROR"}, False, "ERROR"),
])
def test_the_demo_console_keeps_to_warnings_unless_asked(servers, tmp_path, environ, flag, level):
    settings = make_settings(servers, tmp_path, **environ)
    assert demo_log_level(settings, flag) == level
    assert settings.log.verbose is (flag or "WXB_LOG_VERBOSE" in environ)
