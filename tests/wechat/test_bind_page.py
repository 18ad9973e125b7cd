"""The binding page ``/wechat/oa/bind``: OAuth entry, openid cookie, XSRF, outcomes.

The OAuth round trip itself runs against the sandbox in
``tests/wechat/test_e2e.py``; here the openid cookie is minted with the
server's cookie secret, as the OAuth return would, to test the form's rules.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import tornado.web

from models import members as members_model
from tests.conftest import SYSTEM, actor_of
from tests.factories import member_fields
from tests.webclient import WebClient
from tests.wechat.helpers import OA
from wxbackend.embedded import free_port
from wxbackend.services.orgs import binding, members

PAGE = "/wechat/oa/bind"


@pytest.fixture
async def browser(oa_url):
    client = WebClient(oa_url)
    try:
        yield client
    finally:
        await client.close()


def openid_cookie(ctx, openid: str, secret: str | None = None) -> str:
    value = json.dumps({"openid": openid, "unionid": ""})
    signed = tornado.web.create_signed_value(secret or ctx.settings.security.secret_key,
                                             "wxb_oa_openid", value)
    return signed.decode()


async def member_with_form(ctx, city, name: str = "林芳", **fields) -> tuple[dict, dict]:
    raw = member_fields(name, gender="女", **fields)
    member = await members.create(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), raw)
    return member, {"name": raw["name"], "id_card": raw["id_card"], "phone": raw["phone"]}


async def test_without_openid_the_page_sends_the_member_through_oauth(ctx, browser, oa_url):
    response = await browser.get(PAGE)
    assert response.status_code == 302
    location = response.headers["location"]
    target = urlsplit(location)
    query = parse_qs(target.query)
    assert location.startswith("https://open.weixin.qq.com/connect/oauth2/authorize?")
    assert query["appid"] == [OA.appid] and query["scope"] == ["snsapi_base"]
    assert f"redirect_uri={quote(oa_url + PAGE, safe='')}&" in location
    assert len(query["state"][0]) == 32
    # The state is tied to this browser by a signed, HttpOnly, Secure cookie.
    set_cookie = response.headers["set-cookie"]
    assert set_cookie.startswith("wxb_oa_state=") and "HttpOnly" in set_cookie and "Secure" in set_cookie


async def test_oauth_return_with_a_wrong_state_is_refused(ctx, browser):
    await browser.get(PAGE)  # sets the state cookie
    response = await browser.get(PAGE + "?code=abc&state=0123456789abcdef")
    assert response.status_code == 400
    assert "链接已失效" in response.text
    assert "wxb_oa_openid" not in browser.cookies


async def test_oauth_return_when_wechat_fails_is_a_clear_page(ctx, browser):
    ctx.settings.wechat.api_base = f"http://127.0.0.1:{free_port()}"
    ctx.settings.wechat.api_retries = 0
    first = await browser.get(PAGE)
    state = parse_qs(urlsplit(first.headers["location"]).query)["state"][0]
    response = await browser.get(f"{PAGE}?code=abc&state={state}")
    assert response.status_code == 503 and "微信授权失败" in response.text
    assert "wxb_oa_openid" not in browser.cookies


async def test_the_form_binds_with_a_valid_openid_cookie(ctx, city, browser):
    member, form = await member_with_form(ctx, city)
    browser.cookies["wxb_oa_openid"] = openid_cookie(ctx, "o-page")
    page = await browser.get(PAGE)
    assert page.status_code == 200 and 'name="id_card"' in page.text and "_xsrf" in page.text
    response = await browser.post_form(PAGE, form)
    assert response.status_code == 200, response.text
    assert "绑定成功" in response.text and "林芳同志" in response.text
    assert (await members_model.get(ctx.db, member["_id"]))["oa_openid"] == "o-page"
    again = await browser.get(PAGE)
    assert "您已绑定为林芳" in again.text and 'name="id_card"' not in again.text


async def test_wrong_data_shows_the_remaining_tries_and_keeps_the_id_card_out(ctx, city, browser):
    member, form = await member_with_form(ctx, city)
    browser.cookies["wxb_oa_openid"] = openid_cookie(ctx, "o-page")
    response = await browser.post_form(PAGE, {**form, "name": "林方"})
    assert response.status_code == 422
    assert "还可尝试4次" in response.text and 'value="林方"' in response.text
    assert form["id_card"] not in response.text
    assert (await members_model.get(ctx.db, member["_id"])).get("oa_openid") is None


async def test_locked_after_five_wrong_tries(ctx, city, browser):
    member, form = await member_with_form(ctx, city)
    browser.cookies["wxb_oa_openid"] = openid_cookie(ctx, "o-page")
    for _ in range(5):
        await browser.post_form(PAGE, {**form, "phone": "13100000000"})
    response = await browser.post_form(PAGE, form)
    assert response.status_code == 429
    assert "绑定已锁定" in response.text and "60分钟" in response.text
    assert int(response.headers["retry-after"]) > 3500
    assert (await members_model.get(ctx.db, member["_id"])).get("oa_openid") is None


@pytest.mark.parametrize("cookie", ["missing", "unsigned", "other-key", "expired"])
async def test_post_without_a_genuine_openid_cookie_is_refused(ctx, city, browser, cookie):
    member, form = await member_with_form(ctx, city)
    if cookie == "unsigned":
        browser.cookies["wxb_oa_openid"] = json.dumps({"openid": "o-forged"})
    elif cookie == "other-key":
        browser.cookies["wxb_oa_openid"] = openid_cookie(ctx, "o-forged", secret="x" * 48)
    elif cookie == "expired":
        import time
        from unittest import mock

        with mock.patch("time.time", return_value=time.time() - 3600):
            browser.cookies["wxb_oa_openid"] = openid_cookie(ctx, "o-forged")
    # An openid in the form is ignored: only the OAuth cookie names the WeChat user.
    response = await browser.post_form(PAGE, {**form, "openid": "o-forged"})
    assert response.status_code == 403
    assert "绑定页面已过期" in response.text
    assert (await members_model.get(ctx.db, member["_id"])).get("oa_openid") is None
    assert await members_model.by_openid(ctx.db, "oa_openid", "o-forged") is None


async def test_post_without_xsrf_is_refused(ctx, city, browser):
    member, form = await member_with_form(ctx, city)
    browser.cookies["wxb_oa_openid"] = openid_cookie(ctx, "o-page")
    response = await browser.post_form(PAGE, form, xsrf=False)
    assert response.status_code == 403
    assert (await members_model.get(ctx.db, member["_id"])).get("oa_openid") is None


async def test_bound_elsewhere_and_inactive_answer_as_a_wrong_guess(ctx, city, browser):
    # A right guess must not be told apart from a wrong one (hole 5 of the review):
    # the member bound elsewhere and the one who died both get the wrong-guess answer.
    member, form = await member_with_form(ctx, city)
    await binding.bind(ctx, "oa", "o-first", None, form["name"], form["id_card"], form["phone"], "1.1.1.1")
    browser.cookies["wxb_oa_openid"] = openid_cookie(ctx, "o-second")
    response = await browser.post_form(PAGE, form)
    assert response.status_code == 422 and "还可尝试4次" in response.text
    assert "已绑定其他微信号" not in response.text
    other, other_form = await member_with_form(ctx, city, "孙丽")
    await members.set_state(ctx, SYSTEM, other["_id"], "deceased")
    response = await browser.post_form(PAGE, other_form)
    assert response.status_code == 422 and "不一致" in response.text and "已去世" not in response.text
    assert (await members_model.get(ctx.db, other["_id"])).get("oa_openid") is None
    assert (await members_model.get(ctx.db, member["_id"]))["oa_openid"] == "o-first"
