"""Management web over real HTTP: sessions, lockout, XSRF, scope, audit."""

from collections import Counter

import pytest

from tests.conftest import ADMIN_PASSWORD, actor_of
from tests.factories import member_fields
from tests.logins import burst, code_of, issued_session, session_count
from tests.webclient import WebClient
from wxbackend.services.orgs import members


async def test_login_sets_secure_httponly_session_and_logout_revokes(web):
    page = await web.get("/admin/login")
    assert page.status_code == 200 and "管理平台登录" in page.text
    response = await web.post_form("/admin/login", {"username": "nobody", "password": "x"})
    assert response.status_code == 401 and "用户名或密码错误" in response.text


async def test_session_cookie_flags_and_logout(ctx, city, web):
    response = await web.login("east", ADMIN_PASSWORD)
    cookie = next(h for h in response.headers.get_list("set-cookie") if h.startswith("wxb_session="))
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert (await web.get(f"/admin/orgs/{city.org('district_a')}")).status_code == 200
    stolen = dict(web.cookies)
    assert (await web.post_form("/admin/logout")).status_code == 302
    web.cookies = stolen  # replaying the old cookie after logout
    again = await web.get(f"/admin/orgs/{city.org('district_a')}")
    assert again.status_code == 302 and again.headers["location"].startswith("/admin/login")


async def test_repeated_failures_lock_the_account(ctx, city, web):
    for _ in range(5):
        bad = await web.post_form("/admin/login", {"username": "east", "password": "wrong-password"})
        assert bad.status_code == 401
    locked = await web.post_form("/admin/login", {"username": "east", "password": ADMIN_PASSWORD})
    assert locked.status_code == 429 and "锁定" in locked.text
    assert "_xsrf" in web.cookies and "wxb_session" not in web.cookies
    actions = [e["action"] async for e in ctx.db.audit_log.find({"org_ancestors": city.org("district_a")})]
    assert actions.count("user.login_failed") == 5 and "user.locked" in actions


async def test_login_burst_reaches_the_password_check_at_most_the_limit(ctx, city, server_url):
    """The review's attack: 39 wrong and 1 right password for `city`, all at once."""
    limit = ctx.settings.security.login_max_failures
    responses = await burst(server_url, [("city", f"wrong-password-{i}") for i in range(39)]
                            + [("city", ADMIN_PASSWORD)])
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {302, 401, 429}
    # Each try is counted before its check: only `limit` tries get checked, and
    # only a success (among them) starts the count again, once.
    assert statuses[401] <= (2 * limit - 1 if statuses[302] else limit)
    refused = [r for r in responses if r.status_code == 429]
    assert len(refused) >= 40 - 2 * limit
    assert all(code_of(r) == "account_locked" and int(r.headers["retry-after"]) > 0
               and not issued_session(r) for r in refused)
    assert sum(issued_session(r) for r in responses) == statuses[302] <= 1
    assert await session_count(ctx.redis) == statuses[302]


async def test_right_password_is_refused_once_a_burst_used_the_tries(ctx, city, server_url):
    limit = ctx.settings.security.login_max_failures
    first = await burst(server_url, [("city", f"wrong-password-{i}") for i in range(40)])
    assert Counter(r.status_code for r in first) == {401: limit, 429: 40 - limit}
    second = await burst(server_url, [("city", ADMIN_PASSWORD)] * 10 + [("city", "wrong-password")] * 10)
    assert {(r.status_code, code_of(r)) for r in second} == {(429, "account_locked")}
    assert not any(issued_session(r) for r in first + second)
    assert await session_count(ctx.redis) == 0
    actions = [e["action"] async for e in ctx.db.audit_log.find({"org_ancestors": city.org("root")})]
    assert "user.login" not in actions and actions.count("user.login_failed") == limit
    assert "last_login_at" not in await ctx.db.users.find_one({"_id": city.users["city"]["_id"]})


async def test_unknown_names_lock_and_answer_exactly_like_known_ones(ctx, city, server_url):
    limit = ctx.settings.security.login_max_failures
    answers = {}
    for name in ("east", "no_such_admin"):
        client = WebClient(server_url)
        steps = []
        for _ in range(limit + 2):
            r = await client.post_form("/admin/login", {"username": name, "password": "wrong-password"})
            steps.append((r.status_code, code_of(r), sorted(r.headers.keys()), r.headers.get("retry-after")))
        await client.close()
        answers[name] = steps
    assert [s[0] for s in answers["east"]] == [401] * limit + [429, 429]
    for known, unknown in zip(answers["east"], answers["no_such_admin"], strict=True):
        assert known[:3] == unknown[:3]
        assert (known[3] is None) == (unknown[3] is None)
        assert known[3] is None or abs(int(known[3]) - int(unknown[3])) <= 1
    # The unknown name is locked too: no guessing it forever.
    assert code_of((await burst(server_url, [("no_such_admin", "x")]))[0]) == "account_locked"


async def test_one_address_cannot_spray_a_password_over_many_names(ctx, city, server_url):
    per_ip = ctx.settings.security.login_ip_max_failures
    sprayed = await burst(server_url, [(f"guess{i}", "Spring-2027!") for i in range(per_ip + 10)])
    assert Counter(r.status_code for r in sprayed) == {401: per_ip, 429: 10}
    assert {code_of(r) for r in sprayed if r.status_code == 429} == {"login_rate_limited"}
    right = (await burst(server_url, [("east", ADMIN_PASSWORD)]))[0]
    assert right.status_code == 429 and code_of(right) == "login_rate_limited"
    assert int(right.headers["retry-after"]) > 0 and not issued_session(right)
    assert await session_count(ctx.redis) == 0


async def test_a_right_password_within_the_limit_starts_the_count_afresh(ctx, city, web):
    limit = ctx.settings.security.login_max_failures
    for _ in range(2):
        for _ in range(limit - 1):
            bad = await web.post_form("/admin/login", {"username": "east", "password": "wrong-password"})
            assert bad.status_code == 401 and code_of(bad) == "login_failed"
        await web.login("east", ADMIN_PASSWORD)


async def test_posts_without_xsrf_are_refused(ctx, city, web):
    assert (await web.post_form("/admin/login", {"username": "east", "password": ADMIN_PASSWORD},
                                xsrf=False)).status_code == 403
    await web.login("east", ADMIN_PASSWORD)
    response = await web.post_form(f"/admin/orgs/{city.org('branch_a1')}/rename", {"name": "被篡改"}, xsrf=False)
    assert response.status_code == 403 and "页面已过期" in response.text
    org = await ctx.db.organisations.find_one({"_id": city.org("branch_a1")})
    assert org["name"] == "东区第一党支部"


async def test_create_member_through_the_form(ctx, city, web):
    await web.login("sec_a1", ADMIN_PASSWORD)
    fields = member_fields("表单党员")
    response = await web.post_form(f"/admin/orgs/{city.org('branch_a1')}/members/new", fields)
    assert response.status_code == 302
    page = await web.get(response.headers["location"])
    assert "表单党员" in page.text
    assert fields["id_card"] not in page.text and fields["phone"] not in page.text
    bad = await web.post_form(f"/admin/orgs/{city.org('branch_a1')}/members/new",
                              dict(member_fields("坏数据"), id_card="350203198503140012"))
    assert bad.status_code == 400 and "校验位错误" in bad.text
    assert await ctx.db.members.count_documents({"org_id": city.org("branch_a1")}) == 1


async def test_unmask_over_the_web_is_a_logged_post(ctx, city, web):
    fields = member_fields("揭示")
    member = await members.create(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), fields)
    await web.login("sec_a1", ADMIN_PASSWORD)
    posted = await web.post_form(f"/admin/members/{member['_id']}/unmask")
    assert posted.status_code == 303
    shown = await web.get(posted.headers["location"])
    assert shown.status_code == 200 and fields["id_card"] in shown.text
    audit = await web.get(f"/admin/audit?org={city.org('branch_a1')}")
    assert audit.status_code == 403  # secretaries do not read the audit log
    await web.login("east", ADMIN_PASSWORD)
    audit = await web.get(f"/admin/audit?org={city.org('district_a')}")
    assert "查看完整个人信息" in audit.text and "揭示" in audit.text


# (user, url template, expected status) — the scope matrix of the management web.
SCOPE = [
    ("east", "/admin/orgs/{branch_a1}", 200), ("east", "/admin/orgs/{branch_b1}", 403),
    ("east", "/admin/orgs/{root}", 403), ("city", "/admin/orgs/{branch_b1}", 200),
    ("west", "/admin/orgs/{branch_a1}", 403), ("sec_a1", "/admin/orgs/{branch_a2}", 403),
    ("sec_a1", "/admin/orgs/{district_a}", 403), ("auditor_a", "/admin/orgs/{branch_a1}", 200),
    ("east", "/admin/members/{member_b}", 403), ("west", "/admin/members/{member_b}", 200),
    ("sec_a1", "/admin/members/{member_a}", 200), ("auditor_a", "/admin/members/{member_b}", 403),
    ("east", "/admin/orgs/{district_b}/members", 403), ("east", "/admin/orgs/{district_b}/members?q=陈", 403),
    ("east", "/admin/audit?org={district_b}", 403), ("auditor_a", "/admin/audit?org={district_a}", 200),
    ("west", "/admin/members/{member_a}/edit", 403),
]


@pytest.mark.parametrize("user, template, expected", SCOPE)
async def test_scope_matrix(ctx, city, web, user, template, expected):
    member_a = await members.create(ctx, actor_of(city, "city"), city.org("branch_a1"), member_fields("陈东"))
    member_b = await members.create(ctx, actor_of(city, "city"), city.org("branch_b1"), member_fields("陈西"))
    ids = {name: city.org(name) for name in ("root", "district_a", "district_b", "branch_a1", "branch_a2", "branch_b1")}
    url = template.format(member_a=member_a["_id"], member_b=member_b["_id"], **ids)
    await web.login(user, ADMIN_PASSWORD)
    response = await web.get(url)
    assert response.status_code == expected, response.text[:300]
    if expected == 403:
        assert "陈西" not in response.text and "陈东" not in response.text


@pytest.mark.parametrize("user, action, data", [
    ("west", "members/{member_a}/edit", "fields"),
    ("west", "members/{member_a}/state", {"state": "deceased"}),
    ("west", "members/{member_a}/unmask", {}),
    ("auditor_a", "members/{member_a}/state", {"state": "deceased"}),
    ("auditor_a", "orgs/{branch_a1}/rename", {"name": "审计员改名"}),
    ("sec_a1", "orgs/{branch_a1}/dissolve", {}),
    ("east", "orgs/{branch_b1}/rename", {"name": "越权改名"}),
])
async def test_writes_outside_scope_change_nothing(ctx, city, web, user, action, data):
    member_a = await members.create(ctx, actor_of(city, "city"), city.org("branch_a1"), member_fields("陈东"))
    before_members = await ctx.db.members.find({"org_id": city.org("branch_a1")}).to_list()
    before_orgs = await ctx.db.organisations.find({"org_ancestors": city.org("root")}).to_list()
    await web.login(user, ADMIN_PASSWORD)
    if data == "fields":
        data = dict(member_fields("改名"), id_card="")
    url = "/admin/" + action.format(member_a=member_a["_id"], branch_a1=city.org("branch_a1"),
                                    branch_b1=city.org("branch_b1"))
    response = await web.post_form(url, data)
    assert response.status_code == 403
    assert await ctx.db.members.find({"org_id": city.org("branch_a1")}).to_list() == before_members
    assert await ctx.db.organisations.find({"org_ancestors": city.org("root")}).to_list() == before_orgs


async def test_unknown_ids_are_404_not_500(ctx, city, web):
    await web.login("city", ADMIN_PASSWORD)
    for url in ("/admin/orgs/0123456789abcdef01234567", "/admin/members/0123456789abcdef01234567",
                "/admin/nowhere"):
        response = await web.get(url)
        assert response.status_code == 404, url
    bad_cursor = await web.get(f"/admin/orgs/{city.org('root')}/members?cursor=%%%")
    assert bad_cursor.status_code == 400 and "分页参数无效" in bad_cursor.text


async def test_org_tree_browser_shows_counts(ctx, city, web):
    await members.create(ctx, actor_of(city, "city"), city.org("branch_a1"), member_fields("计数"))
    await web.login("city", ADMIN_PASSWORD)
    page = await web.get(f"/admin/orgs/{city.org('root')}")
    assert "东区区委" in page.text and "西区区委" in page.text
    assert 'id="subtree-count">1<' in page.text
    members_page = await web.get(f"/admin/orgs/{city.org('root')}/members")
    assert "计数" in members_page.text and "东区第一党支部" in members_page.text
