"""The async WeChat client against the sandbox over real HTTP.

Token lifecycle (one fetch per deployment, refresh-once-retry-once), retries
and typed errors, and each API family's request and answer shapes.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.wechat_fixtures import Sandbox
from wxbackend.context import AppContext
from wxbackend.wechat import errors
from wxbackend.wechat.client import mp_client, oa_client

STABLE = "/cgi-bin/stable_token"
FORCED = "/cgi-bin/stable_token#force_refresh"
USER_INFO = "/cgi-bin/user/info"
CUSTOM = "/cgi-bin/message/custom/send"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


async def test_token_is_fetched_once_and_cached_in_redis(ctx, sandbox: Sandbox):
    await sandbox.follow("oUser1")
    client = oa_client(ctx)
    first = await client.user_info("oUser1")
    second = await client.user_info("oUser1")
    assert first["subscribe"] == second["subscribe"] == 1
    assert sandbox.calls(STABLE) == 1
    key = f"wx:token:{ctx.settings.wechat.oa_appid}"
    assert (await ctx.redis.get(key)).decode().startswith("SBX_")
    # Cached until the refresh margin before WeChat's expiry.
    ttl = await ctx.redis.ttl(key)
    assert 7200 - 300 - 5 <= ttl <= 7200 - 300


async def test_concurrent_callers_in_two_processes_cause_one_refresh(ctx, servers, sandbox):
    await sandbox.follow("oUser1")
    other = await AppContext.connect(ctx.settings, servers.mongodb_uri, servers.redis_url,
                                     database=ctx.db.name)
    try:
        clients = [oa_client(ctx), oa_client(other)]
        assert clients[0].http is not clients[1].http  # separate pools, separate Redis links
        results = await asyncio.gather(*(clients[i % 2].user_info("oUser1") for i in range(40)))
    finally:
        await other.close()
    assert all(r["openid"] == "oUser1" for r in results)
    assert sandbox.calls(STABLE) == 1
    assert sandbox.calls(USER_INFO) == 40


async def test_expired_token_is_refreshed_once_and_the_call_retried(ctx, sandbox):
    await sandbox.follow("oUser1")
    client = oa_client(ctx)
    await client.user_info("oUser1")
    old = await client.tokens.cached()
    answer = await sandbox.http.post(f"/sandbox/tokens/{client.appid}/expire")
    assert answer.json()["expired"] == 1

    assert (await client.user_info("oUser1"))["subscribe"] == 1
    assert sandbox.calls(USER_INFO) == 3  # ok, 42001, retried ok
    assert sandbox.calls(STABLE) == 2
    assert sandbox.calls(FORCED) == 0  # an expired token is replaced without force
    assert await client.tokens.cached() != old


async def test_invalid_token_is_replaced_without_force_refresh(ctx, sandbox):
    await sandbox.follow("oUser1")
    client = oa_client(ctx)
    await ctx.redis.set(client.tokens.key, "SBX_stale_from_elsewhere", ex=600)
    assert (await client.user_info("oUser1"))["openid"] == "oUser1"
    assert sandbox.calls(USER_INFO) == 2
    assert sandbox.calls(STABLE) == 1
    assert sandbox.calls(FORCED) == 0


async def test_second_rejection_after_refresh_surfaces_without_a_loop(ctx, sandbox):
    await sandbox.follow("oUser1")
    client = oa_client(ctx)
    await client.user_info("oUser1")
    await sandbox.fault(USER_INFO, errcode=40001, times=2)
    with pytest.raises(errors.InvalidCredential) as caught:
        await client.user_info("oUser1")
    assert caught.value.errcode == 40001
    assert "rid:" in caught.value.errmsg
    assert sandbox.calls(USER_INFO) == 3  # first call, then one rejected call and one retry
    # WeChat still handed out the rejected token, so exactly one forced refresh.
    assert sandbox.calls(FORCED) == 1
    assert (await client.user_info("oUser1"))["subscribe"] == 1


async def test_system_busy_is_retried_with_backoff_then_succeeds(ctx, sandbox):
    await sandbox.follow("oUser1")
    client = oa_client(ctx)
    await sandbox.fault(USER_INFO, errcode=-1, times=2)
    started = asyncio.get_running_loop().time()
    assert (await client.user_info("oUser1"))["subscribe"] == 1
    assert sandbox.calls(USER_INFO) == 3
    # Two backoffs: about 0.2 s and 0.4 s.
    assert asyncio.get_running_loop().time() - started >= 0.4


async def test_system_busy_beyond_the_retries_surfaces(ctx, sandbox):
    await sandbox.follow("oUser1")
    assert ctx.settings.wechat.api_retries == 2
    await sandbox.fault(USER_INFO, errcode=-1, times=5)
    with pytest.raises(errors.SystemBusy):
        await oa_client(ctx).user_info("oUser1")
    assert sandbox.calls(USER_INFO) == 3


async def test_timeouts_become_network_errors_after_the_retries(ctx, sandbox):
    await sandbox.follow("oUser1")
    ctx.settings.wechat.api_timeout_seconds = 0.2
    client = oa_client(ctx)
    await client.tokens.get()
    await sandbox.fault(USER_INFO, delay_seconds=0.5, times=3)
    with pytest.raises(errors.WeChatNetworkError) as caught:
        await client.user_info("oUser1")
    assert caught.value.errcode == errors.NETWORK_ERRCODE
    assert isinstance(caught.value, errors.WeChatError)
    assert sandbox.calls(USER_INFO) == 3
    await asyncio.sleep(0.5)  # let the sandbox finish its delayed answers


async def test_daily_quota_surfaces_without_retry(ctx, sandbox):
    await sandbox.follow("oUser1")
    sandbox.config.daily_quota[CUSTOM] = 2
    client = oa_client(ctx)
    await client.send_custom_text("oUser1", "第一条")
    await client.send_custom_text("oUser1", "第二条")
    with pytest.raises(errors.QuotaExceeded):
        await client.send_custom_text("oUser1", "第三条")
    assert sandbox.calls(CUSTOM) == 3
    assert [m["body"]["text"]["content"] for m in await sandbox.outbox()] == ["第一条", "第二条"]


async def test_subscribe_message_needs_a_grant_per_message(ctx, sandbox):
    await sandbox.login_code("oMini1")
    client = mp_client(ctx)
    data = {"thing1": {"value": "支部党员大会"}, "time2": {"value": "2026年12月1日 19:30"}}
    with pytest.raises(errors.UserNotSubscribed):
        await client.send_subscribe("oMini1", "TPL_MEETING", data)
    assert sandbox.calls("/cgi-bin/message/subscribe/send") == 1  # not retried
    await sandbox.http.post("/sandbox/mp/users/oMini1/grant-subscribe",
                            json={"template_id": "TPL_MEETING"})
    await client.send_subscribe("oMini1", "TPL_MEETING", data, page="pages/meeting/index?id=1")
    with pytest.raises(errors.UserNotSubscribed):
        await client.send_subscribe("oMini1", "TPL_MEETING", data)
    sent = await sandbox.outbox(kind="subscribe")
    assert len(sent) == 1
    assert sent[0]["body"]["page"] == "pages/meeting/index?id=1"
    assert sent[0]["appid"] == ctx.settings.wechat.mp_appid


async def test_custom_and_template_messages_are_recorded_in_the_outbox(ctx, sandbox):
    await sandbox.follow("oUser1")
    client = oa_client(ctx)
    await client.send_custom_text("oUser1", "您已成功绑定。")
    msgid = await client.send_template("oUser1", "TPL_DUES", {"thing1": {"value": "党费"}},
                                       url="https://example.org/dues")
    custom = await sandbox.outbox(openid="oUser1", kind="custom")
    template = await sandbox.outbox(openid="oUser1", kind="template")
    assert custom[0]["body"] == {"touser": "oUser1", "msgtype": "text",
                                 "text": {"content": "您已成功绑定。"}}
    assert template[0]["msgid"] == msgid
    assert template[0]["body"]["url"] == "https://example.org/dues"
    assert await sandbox.outbox(openid="oSomeoneElse") == []


async def test_message_rules_of_followers(ctx, sandbox):
    client = oa_client(ctx)
    with pytest.raises(errors.InvalidOpenId):
        await client.send_custom_text("oNobody", "你好")
    await sandbox.http.post("/sandbox/users/oGone", json={"following": False})
    with pytest.raises(errors.RequireSubscribe):
        await client.send_template("oGone", "TPL", {"thing1": {"value": "x"}})
    with pytest.raises(errors.ResponseWindowClosed):
        await client.send_custom_text("oGone", "你好")
    assert await sandbox.outbox() == []


async def test_user_info_of_a_non_follower(ctx, sandbox):
    await sandbox.http.post("/sandbox/users/oGone", json={"following": False})
    assert await oa_client(ctx).user_info("oGone") == {"subscribe": 0, "openid": "oGone"}


async def test_temporary_and_permanent_qrcodes(ctx, sandbox):
    client = oa_client(ctx)
    temporary = await client.create_qrcode("bind:5f1c", expire_seconds=600)
    assert temporary["expire_seconds"] == 600
    assert temporary["url"].startswith("http://weixin.qq.com/q/")
    permanent = await client.create_qrcode("branch:A1")
    assert permanent["expire_seconds"] is None
    assert sandbox.world.qrcodes[permanent["ticket"]]["scene"] == "branch:A1"
    image_url = client.qrcode_image_url(temporary["ticket"])
    assert image_url.startswith(f"{sandbox.url}/cgi-bin/showqrcode?ticket=")
    image = await sandbox.http.get(image_url)
    assert image.headers["content-type"] == "image/png"
    assert image.content.startswith(PNG_SIGNATURE)


@pytest.mark.parametrize("scene, expire", [
    ("", None), ("x" * 65, None), ("ok", 0), ("ok", 2_592_001), ("ok", True)])
async def test_bad_qrcode_arguments_fail_before_any_request(ctx, sandbox, scene, expire):
    with pytest.raises(ValueError):
        await oa_client(ctx).create_qrcode(scene, expire_seconds=expire)
    assert sandbox.calls("/cgi-bin/qrcode/create") == 0
    assert sandbox.calls(STABLE) == 0


async def test_qrcode_limits_are_inclusive(ctx, sandbox):
    client = oa_client(ctx)
    assert (await client.create_qrcode("x" * 64, expire_seconds=2_592_000))["ticket"]


async def test_code2session_success_reuse_and_rate_limit(ctx, sandbox):
    client = mp_client(ctx)
    code = await sandbox.login_code("oMini1", unionid="oUnion1")
    session = await client.code2session(code)
    assert session["openid"] == "oMini1"
    assert session["unionid"] == "oUnion1"
    assert session["session_key"] == sandbox.world.mp_users["oMini1"].session_key
    with pytest.raises(errors.InvalidCode):
        await client.code2session(code)
    with pytest.raises(errors.InvalidCode):
        await client.code2session("never-issued")
    assert sandbox.calls(STABLE) == 0  # code2session uses appid + secret, no token

    sandbox.config.minute_limit["/sns/jscode2session"] = 3
    fresh = await sandbox.login_code("oMini2")
    with pytest.raises(errors.CodeRateLimited):
        await client.code2session(fresh)
    assert sandbox.calls("/sns/jscode2session") == 4  # not retried
    assert not sandbox.world.codes[fresh].used


async def test_code2session_without_unionid(ctx, sandbox):
    session = await mp_client(ctx).code2session(await sandbox.login_code("oMini3"))
    assert "unionid" not in session


async def test_oauth_code_exchange(ctx, sandbox):
    client = oa_client(ctx)
    url = client.oauth_authorize_url("https://example.org/wechat/bind?next=/me", state="b1")
    assert url.endswith("&response_type=code&scope=snsapi_base&state=b1#wechat_redirect")
    assert "redirect_uri=https%3A%2F%2Fexample.org%2Fwechat%2Fbind%3Fnext%3D%2Fme" in url
    # The user's WeChat opens the URL (the fragment stays in the client).
    answer = await sandbox.http.get(url.split("#")[0] + "&sandbox_openid=oUser1")
    assert answer.status_code == 302
    target = urlsplit(answer.headers["location"])
    assert target.netloc == "example.org" and target.path == "/wechat/bind"
    query = parse_qs(target.query)
    assert query["state"] == ["b1"] and query["next"] == ["/me"]
    identity = await client.oauth_openid(query["code"][0])
    assert identity == {"openid": "oUser1"}
    with pytest.raises(errors.InvalidCode) as caught:
        await client.oauth_openid(query["code"][0])
    assert caught.value.errcode == 40163
    assert sandbox.calls(STABLE) == 0


@pytest.mark.parametrize("kwargs", [{"scope": "snsapi_login"}, {"state": "含中文"},
                                    {"state": "x" * 129}])
def test_oauth_url_rejects_bad_arguments(ctx, kwargs):
    args = {"redirect_uri": "https://example.org/b", "state": "s", **kwargs}
    with pytest.raises(ValueError):
        oa_client(ctx).oauth_authorize_url(**args)


async def test_menu_create(ctx, sandbox):
    menu = {"button": [{"type": "click", "name": "帮助", "key": "HELP"},
                       {"name": "我的", "sub_button": [
                           {"type": "view", "name": "绑定身份", "url": "https://example.org/b"}]}]}
    await oa_client(ctx).create_menu(menu)
    assert (await sandbox.http.get("/sandbox/menu")).json()["menu"] == menu


async def test_menu_with_too_many_buttons_is_refused(ctx, sandbox):
    button = {"type": "click", "name": "帮助", "key": "HELP"}
    with pytest.raises(errors.InvalidRequest) as caught:
        await oa_client(ctx).create_menu({"button": [button] * 4})
    assert caught.value.errcode == 40016
    assert (await sandbox.http.get("/sandbox/menu")).json()["menu"] is None


async def test_wxacode_is_a_png(ctx, sandbox):
    image = await mp_client(ctx).get_wxacode_unlimit("m=5f1c&o=A1", page="pages/checkin/index")
    assert image.startswith(PNG_SIGNATURE)


@pytest.mark.parametrize("scene, width", [("x" * 33, 430), ("中文", 430), ("", 430),
                                          ("a%20b", 430), ("ok", 279), ("ok", 1281)])
async def test_bad_wxacode_arguments_fail_before_any_request(ctx, sandbox, scene, width):
    with pytest.raises(ValueError):
        await mp_client(ctx).get_wxacode_unlimit(scene, width=width)
    assert sandbox.calls("/wxa/getwxacodeunlimit") == 0


async def test_wxacode_error_answer_is_typed(ctx, sandbox):
    await sandbox.fault("/wxa/getwxacodeunlimit", errcode=45009)
    with pytest.raises(errors.QuotaExceeded):
        await mp_client(ctx).get_wxacode_unlimit("ok")


async def test_phone_number(ctx, sandbox):
    answer = await sandbox.http.post("/sandbox/mp/users/oMini1/phone-code",
                                     json={"phone": "13800138000"})
    code = answer.json()["code"]
    phone = await mp_client(ctx).get_user_phone_number(code)
    assert phone["purePhoneNumber"] == "13800138000"
    assert phone["countryCode"] == "86"
    assert phone["watermark"]["appid"] == ctx.settings.wechat.mp_appid
    with pytest.raises(errors.InvalidCode):
        await mp_client(ctx).get_user_phone_number(code)


async def test_clients_share_one_http_pool_closed_with_the_context(servers, settings, sandbox):
    context = await AppContext.connect(settings, servers.mongodb_uri, servers.redis_url)
    oa, mp = oa_client(context), mp_client(context)
    assert oa is oa_client(context) and oa.http is mp.http
    await context.close()
    assert oa.http.is_closed


def test_error_for_picks_the_class_by_errcode():
    assert type(errors.error_for(40001, "x")) is errors.InvalidCredential
    assert type(errors.error_for(42001, "x")) is errors.AccessTokenExpired
    assert type(errors.error_for(45009, "x")) is errors.QuotaExceeded
    assert type(errors.error_for(43101, "x")) is errors.UserNotSubscribed
    assert type(errors.error_for(45011, "x")) is errors.CodeRateLimited
    assert type(errors.error_for(-1, "x")) is errors.SystemBusy
    assert isinstance(errors.error_for(40163, "x"), errors.InvalidCode)
    unknown = errors.error_for(99999, "new")
    assert type(unknown) is errors.WeChatError
    assert (unknown.errcode, unknown.errmsg) == (99999, "new")
    assert errors.SystemBusy(-1, "").retryable and not errors.QuotaExceeded(45009, "").retryable
