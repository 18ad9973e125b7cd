"""Management web, issues #13 and #19: search that pages, breadcrumbs that open,
the clear view by post/redirect/get, and an auditor told it is read-only."""

from __future__ import annotations

import html
import re

from models import audit as audit_model
from tests.conftest import ADMIN_PASSWORD, actor_of
from tests.factories import member_fields
from tests.memberkit import fill_branch
from tests.webclient import WebClient
from wxbackend.services.orgs import members

ROW = 'href="/admin/members/'


def link(page, anchor: str) -> str | None:
    """The URL of the pager link with id ``anchor`` (relative to the list), if shown."""
    found = re.search(rf'id="{anchor}" href="([^"]+)"', page.text)
    return html.unescape(found.group(1)) if found else None


def member_ids(page) -> list[str]:
    return re.findall(r'href="/admin/members/([0-9a-f]{24})"', page.text)


def error_code(response) -> str:
    found = re.search(r'data-code="([^"]+)"', response.text)
    return found.group(1) if found else ""


# -- 1. member search pages -------------------------------------------------------

async def test_search_pages_on_keeping_the_query_and_back(ctx, city, web):
    docs = await fill_branch(ctx, city, [f"陈{i:03d}" for i in range(70)] + [f"林{i:03d}" for i in range(10)])
    docs += await fill_branch(ctx, city, [f"陈{i:03d}" for i in range(50)], branch="branch_a2")
    await web.login("city", ADMIN_PASSWORD)
    base = f"/admin/orgs/{city.org('district_a')}/members"
    first = await web.get(base + "?q=陈")
    assert first.status_code == 200 and first.text.count(ROW) == members.PAGE_SIZE
    assert "搜索“陈”" in first.text and "共 " not in first.text  # no total that is not the results'
    assert link(first, "prev-page") is None
    seen = member_ids(first)
    page = first
    while link(page, "next-page"):
        assert "q=%E9%99%88&" in link(page, "next-page")  # the query rides along
        page = await web.get(base + link(page, "next-page"))
        assert page.status_code == 200 and "搜索“陈”" in page.text and link(page, "prev-page")
        seen += member_ids(page)
    chens = sorted((d for d in docs if d["name"].startswith("陈")), key=lambda d: (d["name"], d["_id"]))
    assert seen == [str(d["_id"]) for d in chens]  # all 120, in name order, none twice
    back = await web.get(base + link(page, "prev-page"))
    assert member_ids(back) == seen[members.PAGE_SIZE:2 * members.PAGE_SIZE]
    again = await web.get(base + link(back, "prev-page"))
    assert member_ids(again) == member_ids(first) and link(again, "prev-page") is None


async def test_the_plain_list_pages_back_and_says_what_its_total_counts(ctx, city, web):
    await fill_branch(ctx, city, [f"党员{i:03d}" for i in range(120)])
    await web.login("east", ADMIN_PASSWORD)
    base = f"/admin/orgs/{city.org('district_a')}/members"
    first = await web.get(base)
    assert first.text.count(ROW) == members.PAGE_SIZE and link(first, "prev-page") is None
    assert "状态正常的党员共 120 人" in first.text
    second = await web.get(base + link(first, "next-page"))
    assert link(second, "next-page") and "q=" not in link(second, "next-page")
    back = await web.get(base + link(second, "prev-page"))
    assert member_ids(back) == member_ids(first)


# -- 3. breadcrumbs ----------------------------------------------------------------

def crumbs(page) -> str:
    return re.search(r'<div class="crumbs">(.*?)</div>', page.text, re.S).group(1)


async def test_breadcrumbs_link_only_where_the_user_may_go(ctx, city, web):
    branch = f"/admin/orgs/{city.org('branch_a1')}"
    member = await members.create(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), member_fields("路径"))
    for user, linked, plain in (("sec_a1", [], ["root", "district_a"]),
                                ("east", ["district_a"], ["root"]),
                                ("city", ["root", "district_a"], [])):
        await web.login(user, ADMIN_PASSWORD)
        for url in (branch, f"{branch}/members", f"/admin/members/{member['_id']}"):
            page = await web.get(url)
            trail = crumbs(page)
            for name in plain:
                org = getattr(city, name)
                assert org["name"] in trail and f"/admin/orgs/{org['_id']}\"" not in trail, (user, url, name)
            for name in linked:
                assert f"/admin/orgs/{city.org(name)}\"" in trail, (user, url, name)
            for href in re.findall(r'href="([^"]+)"', trail):  # every link opens
                assert (await web.get(href)).status_code == 200, (user, url, href)


# -- 4. the clear view: post/redirect/get --------------------------------------------

async def unmask_entries(ctx, member) -> int:
    return sum(e["action"] == "member.unmask" for e in await audit_model.for_target(ctx.db, member["_id"]))


async def test_unmask_redirects_to_a_get_that_shows_the_numbers_once(ctx, city, web, server_url):
    fields = member_fields("揭示")
    member = await members.create(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), fields)
    await web.login("sec_a1", ADMIN_PASSWORD)
    posted = await web.post_form(f"/admin/members/{member['_id']}/unmask")
    assert posted.status_code == 303
    shown_url = posted.headers["location"]
    assert shown_url.startswith(f"/admin/members/{member['_id']}?") and fields["id_card"] not in shown_url
    # Another session, even of the same admin, holding the address gets the masked view;
    # and does not spend the grant of the session it belongs to.
    other = WebClient(server_url)
    try:
        await other.login("sec_a1", ADMIN_PASSWORD)
        stolen = await other.get(shown_url)
        assert stolen.status_code == 200 and fields["id_card"] not in stolen.text
    finally:
        await other.close()
    shown = await web.get(shown_url)
    assert shown.status_code == 200 and fields["id_card"] in shown.text and fields["phone"] in shown.text
    assert fields["birth_date"] in shown.text
    reloaded = await web.get(shown_url)  # a reload neither posts again nor shows it again
    assert reloaded.status_code == 200 and fields["id_card"] not in reloaded.text
    assert "只显示一次" in reloaded.text
    assert await unmask_entries(ctx, member) == 1


async def test_an_unmask_grant_is_short_lived_and_for_that_member_only(ctx, city, web):
    fields = member_fields("揭示")
    member = await members.create(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), fields)
    other = await members.create(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), member_fields("旁人"))
    await web.login("sec_a1", ADMIN_PASSWORD)
    posted = await web.post_form(f"/admin/members/{member['_id']}/unmask")
    token = posted.headers["location"].split("shown=", 1)[1]
    keys = [k async for k in ctx.redis.scan_iter(match="members:unmask:*")]
    assert len(keys) == 1 and 0 < await ctx.redis.ttl(keys[0]) <= 60
    elsewhere = await web.get(f"/admin/members/{other['_id']}?shown={token}")
    assert elsewhere.status_code == 200 and fields["id_card"] not in elsewhere.text
    assert (await web.get(f"/admin/members/{member['_id']}")).status_code == 200  # no grant: masked
    assert fields["id_card"] not in (await web.get(f"/admin/members/{member['_id']}")).text
    assert fields["id_card"] in (await web.get(posted.headers["location"])).text
    await ctx.redis.delete(*keys)  # what expiry does: the address alone shows nothing
    assert fields["id_card"] not in (await web.get(posted.headers["location"])).text


async def test_the_clear_view_needs_the_audited_post(ctx, city, web):
    fields = member_fields("揭示")
    member = await members.create(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), fields)
    await web.login("auditor_a", ADMIN_PASSWORD)
    refused = await web.post_form(f"/admin/members/{member['_id']}/unmask")
    assert refused.status_code == 403
    forged = await web.get(f"/admin/members/{member['_id']}?shown=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    assert forged.status_code == 200 and fields["id_card"] not in forged.text
    assert (await web.get(f"/admin/members/{member['_id']}/unmask")).status_code == 405
    assert await unmask_entries(ctx, member) == 0


# -- 5. the auditor ------------------------------------------------------------------

async def test_an_auditor_is_told_the_account_is_read_only(ctx, city, web):
    member = await members.create(ctx, actor_of(city, "city"), city.org("branch_a1"), member_fields("陈东"))
    await web.login("auditor_a", ADMIN_PASSWORD)
    for url, data in ((f"/admin/orgs/{city.org('branch_a1')}/rename", {"name": "审计员改名"}),
                      (f"/admin/members/{member['_id']}/state", {"state": "deceased"}),
                      (f"/admin/orgs/{city.org('branch_a1')}/members/new", member_fields("新人"))):
        refused = await web.post_form(url, data)
        assert refused.status_code == 403 and error_code(refused) == "read_only", url
        assert "审计员账号为只读" in refused.text and "无权访问" not in refused.text
    assert error_code(await web.get(f"/admin/members/{member['_id']}/edit")) == "read_only"
    assert error_code(await web.get(f"/admin/orgs/{city.org('branch_a1')}/members/new")) == "read_only"
    # Beyond the auditor's district it is still "no access", not "read-only".
    elsewhere = await web.post_form(f"/admin/orgs/{city.org('branch_b1')}/rename", {"name": "越权"})
    assert elsewhere.status_code == 403 and error_code(elsewhere) == "out_of_scope"
    assert (await ctx.db.members.find_one({"_id": member["_id"]}))["state"] == "active"


async def test_an_auditor_gets_no_empty_action_sections(ctx, city, web):
    member = await members.create(ctx, actor_of(city, "city"), city.org("branch_a1"), member_fields("陈东"))
    pages = [f"/admin/orgs/{city.org('branch_a1')}", f"/admin/orgs/{city.org('district_a')}",
             f"/admin/members/{member['_id']}", f"/admin/orgs/{city.org('district_a')}/members"]
    await web.login("auditor_a", ADMIN_PASSWORD)
    for url in pages:
        page = await web.get(url)
        assert page.status_code == 200, url
        assert "操作</h2>" not in page.text and "<th>操作" not in page.text, url
    await web.login("sec_a1", ADMIN_PASSWORD)  # who may act still sees the section
    assert "操作</h2>" in (await web.get(pages[0])).text
    assert "操作</h2>" in (await web.get(pages[2])).text
