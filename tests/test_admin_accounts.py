"""Account pages over real HTTP: own password change, reset, deactivation, scope."""

import asyncio
import re

import pytest

from tests.conftest import ADMIN_PASSWORD, SYSTEM
from tests.logins import browsers, code_of
from wxbackend.services.accounts import admins

NEW_PASSWORD = "Lighthouse-2027"
PASSWORD_PAGE = "/admin/account/password"
USER_FIELDS = ("password_hash", "active", "session_gen", "must_change_password", "updated_at")


async def user_doc(ctx, city, name):
    return await ctx.db.users.find_one({"_id": city.users[name]["_id"]})


def snapshot(doc):
    return {k: doc.get(k) for k in USER_FIELDS}


async def audit_actions(ctx, city):
    return [e async for e in ctx.db.audit_log.find({"org_ancestors": city.org("root")})]


async def still_in(client, city):
    """Whether the client's session still opens a page (a dead one is sent to the login)."""
    page = await client.get(f"/admin/orgs/{city.org('branch_a1')}")
    return page.status_code == 200


def one_time_password(page):
    return re.search(r'id="one-time-password">([^<]+)<', page.text).group(1)


# -- one's own password ----------------------------------------------------------

async def test_changing_ones_password_ends_the_other_sessions(ctx, city, server_url):
    async with browsers(server_url, 2) as (here, elsewhere):
        await here.login("east", ADMIN_PASSWORD)
        await elsewhere.login("east", ADMIN_PASSWORD)
        assert (await here.get(PASSWORD_PAGE)).status_code == 200
        changed = await here.post_form(PASSWORD_PAGE, {"current": ADMIN_PASSWORD, "new": NEW_PASSWORD,
                                                       "confirm": NEW_PASSWORD})
        assert changed.status_code == 302 and changed.headers["location"].startswith("/admin/")
        assert await still_in(here, city) and not await still_in(elsewhere, city)
        old = await elsewhere.post_form("/admin/login", {"username": "east", "password": ADMIN_PASSWORD})
        assert old.status_code == 401
        await elsewhere.login("east", NEW_PASSWORD)
    entries = await audit_actions(ctx, city)
    assert [e["action"] for e in entries].count("user.password_change") == 1
    assert not any(NEW_PASSWORD in str(e) or ADMIN_PASSWORD in str(e) for e in entries)


@pytest.mark.parametrize("current, new, confirm, code", [
    ("not-my-password", NEW_PASSWORD, NEW_PASSWORD, "wrong_current_password"),
    (ADMIN_PASSWORD, "short-1", "short-1", "weak_password"),
    (ADMIN_PASSWORD, "abcdefghijklmn", "abcdefghijklmn", "password_too_simple"),
    (ADMIN_PASSWORD, "East-2027-house", "East-2027-house", "password_contains_username"),
    (ADMIN_PASSWORD, NEW_PASSWORD, NEW_PASSWORD + "x", "password_mismatch"),
    (ADMIN_PASSWORD, ADMIN_PASSWORD, ADMIN_PASSWORD, "same_password"),
    (ADMIN_PASSWORD, "a1" * 65, "a1" * 65, "password_too_long"),
])
async def test_bad_password_changes_change_nothing(ctx, city, web, current, new, confirm, code):
    await web.login("east", ADMIN_PASSWORD)
    before = snapshot(await user_doc(ctx, city, "east"))
    refused = await web.post_form(PASSWORD_PAGE, {"current": current, "new": new, "confirm": confirm})
    assert refused.status_code == 400 and code_of(refused) == code
    assert snapshot(await user_doc(ctx, city, "east")) == before
    assert await still_in(web, city)
    assert "user.password_change" not in [e["action"] for e in await audit_actions(ctx, city)]


async def test_a_stolen_session_cannot_guess_the_current_password(ctx, city, web):
    limit = ctx.settings.security.login_max_failures
    await web.login("east", ADMIN_PASSWORD)
    before = snapshot(await user_doc(ctx, city, "east"))
    guesses = await asyncio.gather(*(web.post_form(PASSWORD_PAGE, {
        "current": f"guess-number-{i}", "new": NEW_PASSWORD, "confirm": NEW_PASSWORD}) for i in range(20)))
    assert sorted(r.status_code for r in guesses) == [400] * limit + [429] * (20 - limit)
    right = await web.post_form(PASSWORD_PAGE, {"current": ADMIN_PASSWORD, "new": NEW_PASSWORD,
                                                "confirm": NEW_PASSWORD})
    assert right.status_code == 429 and code_of(right) == "account_locked" and "retry-after" in right.headers
    assert snapshot(await user_doc(ctx, city, "east")) == before


async def test_password_change_without_xsrf_is_refused(ctx, city, web):
    await web.login("east", ADMIN_PASSWORD)
    before = snapshot(await user_doc(ctx, city, "east"))
    refused = await web.post_form(PASSWORD_PAGE, {"current": ADMIN_PASSWORD, "new": NEW_PASSWORD,
                                                  "confirm": NEW_PASSWORD}, xsrf=False)
    assert refused.status_code == 403
    assert snapshot(await user_doc(ctx, city, "east")) == before


# -- a higher admin's reset ------------------------------------------------------

async def test_reset_shows_a_one_time_password_and_ends_the_sessions(ctx, city, server_url):
    target = city.users["sec_a1"]["_id"]
    async with browsers(server_url, 2) as (boss, secretary):
        await secretary.login("sec_a1", ADMIN_PASSWORD)
        await boss.login("east", ADMIN_PASSWORD)
        page = await boss.post_form(f"/admin/users/{target}/reset")
        assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
        one_time = one_time_password(page)
        assert not await still_in(secretary, city)
        assert (await secretary.post_form("/admin/login", {"username": "sec_a1",
                                                           "password": ADMIN_PASSWORD})).status_code == 401
        await secretary.login("sec_a1", one_time)
        # Until they choose their own password, every other page sends them to it.
        held = await secretary.get(f"/admin/orgs/{city.org('branch_a1')}")
        assert held.status_code == 302 and held.headers["location"] == PASSWORD_PAGE
        renamed = await secretary.post_form(f"/admin/orgs/{city.org('branch_a1')}/rename", {"name": "改名"})
        assert renamed.status_code == 302 and renamed.headers["location"] == PASSWORD_PAGE
        assert (await ctx.db.organisations.find_one({"_id": city.org("branch_a1")}))["name"] == "东区第一党支部"
        assert (await secretary.post_form(PASSWORD_PAGE, {"current": one_time, "new": NEW_PASSWORD,
                                                          "confirm": NEW_PASSWORD})).status_code == 302
        assert await still_in(secretary, city)
    entries = await audit_actions(ctx, city)
    reset = next(e for e in entries if e["action"] == "user.password_reset")
    assert reset["details"] == {"generated": True} and reset["actor"]["name"] == "east"
    assert not any(one_time in str(e) for e in entries)


async def test_reset_to_a_chosen_password_unlocks_the_account(ctx, city, server_url):
    target = city.users["sec_a1"]["_id"]
    async with browsers(server_url, 2) as (boss, secretary):
        for _ in range(ctx.settings.security.login_max_failures):
            await secretary.post_form("/admin/login", {"username": "sec_a1", "password": "wrong-password"})
        await boss.login("east", ADMIN_PASSWORD)
        before = snapshot(await user_doc(ctx, city, "sec_a1"))
        weak = await boss.post_form(f"/admin/users/{target}/reset", {"password": "weak"})
        assert weak.status_code == 400 and code_of(weak) == "weak_password"
        assert snapshot(await user_doc(ctx, city, "sec_a1")) == before
        chosen = await boss.post_form(f"/admin/users/{target}/reset", {"password": NEW_PASSWORD})
        assert chosen.status_code == 200 and one_time_password(chosen) == NEW_PASSWORD
        await secretary.login("sec_a1", NEW_PASSWORD)


# -- deactivation ----------------------------------------------------------------

async def test_deactivation_ends_sessions_and_reactivation_does_not_revive_them(ctx, city, server_url):
    target = city.users["sec_a1"]["_id"]
    async with browsers(server_url, 3) as (boss, old_device, new_device):
        await old_device.login("sec_a1", ADMIN_PASSWORD)
        await boss.login("east", ADMIN_PASSWORD)
        assert (await boss.post_form(f"/admin/users/{target}/deactivate")).status_code == 302
        assert not await still_in(old_device, city)
        refused = await new_device.post_form("/admin/login", {"username": "sec_a1", "password": ADMIN_PASSWORD})
        assert refused.status_code == 401 and code_of(refused) == "login_failed"
        twice = await boss.post_form(f"/admin/users/{target}/deactivate")
        assert twice.status_code == 409 and code_of(twice) == "already_inactive"
        stolen = dict(old_device.cookies)
        assert (await boss.post_form(f"/admin/users/{target}/reactivate")).status_code == 302
        old_device.cookies = stolen
        assert not await still_in(old_device, city)
        await new_device.login("sec_a1", ADMIN_PASSWORD)
        assert await still_in(new_device, city)
    actions = [e["action"] for e in await audit_actions(ctx, city)]
    assert actions.count("user.deactivate") == 1 and actions.count("user.reactivate") == 1


async def test_racing_deactivations_apply_once(ctx, city, web):
    target = city.users["sec_a1"]["_id"]
    await web.login("east", ADMIN_PASSWORD)
    await web.xsrf()
    answers = await asyncio.gather(*(web.post_form(f"/admin/users/{target}/deactivate") for _ in range(6)))
    assert sorted(r.status_code for r in answers) == [302] + [409] * 5
    assert [e["action"] for e in await audit_actions(ctx, city)].count("user.deactivate") == 1


# -- scope -----------------------------------------------------------------------

async def extra_users(ctx, city):
    """A fellow committee admin of east, and a secretary of branches in both districts."""
    city.users["east2"] = await admins.create_user(
        ctx, SYSTEM, username="east2", password=ADMIN_PASSWORD, display_name="east2",
        roles=[("committee_admin", city.org("district_a"))])
    city.users["both"] = await admins.create_user(
        ctx, SYSTEM, username="both", password=ADMIN_PASSWORD, display_name="both",
        roles=[("secretary", city.org("branch_a2")), ("secretary", city.org("branch_b1"))])


@pytest.mark.parametrize("user, target, action", [
    ("east", "city", "reset"), ("east", "west", "deactivate"), ("east", "east", "reset"),
    ("east", "east2", "deactivate"), ("east", "both", "reset"), ("west", "sec_a1", "reset"),
    ("sec_a1", "auditor_a", "deactivate"), ("auditor_a", "sec_a1", "reset"), ("city", "city", "deactivate"),
])
async def test_account_actions_outside_scope_change_nothing(ctx, city, server_url, user, target, action):
    await extra_users(ctx, city)
    target_id = city.users[target]["_id"]
    async with browsers(server_url, 2) as (actor, victim):
        await victim.login(target, ADMIN_PASSWORD)
        before = snapshot(await user_doc(ctx, city, target))
        await actor.login(user, ADMIN_PASSWORD)
        assert (await actor.get(f"/admin/users/{target_id}")).status_code == 403
        refused = await actor.post_form(f"/admin/users/{target_id}/{action}")
        assert refused.status_code == 403 and code_of(refused) == "out_of_scope"
        assert snapshot(await user_doc(ctx, city, target)) == before
        assert (await victim.get(PASSWORD_PAGE)).status_code == 200  # their session lives on
    assert not {"user.password_reset", "user.deactivate"} & {e["action"] for e in await audit_actions(ctx, city)}


@pytest.mark.parametrize("user, target", [("city", "east"), ("east", "sec_a1"), ("east", "auditor_a"),
                                          ("city", "both")])
async def test_higher_admins_manage_the_accounts_below(ctx, city, web, user, target):
    await extra_users(ctx, city)
    await web.login(user, ADMIN_PASSWORD)
    target_id = city.users[target]["_id"]
    assert (await web.get(f"/admin/users/{target_id}")).status_code == 200
    assert (await web.post_form(f"/admin/users/{target_id}/deactivate")).status_code == 302
    assert (await user_doc(ctx, city, target))["active"] is False


async def test_account_list_is_scoped_and_unknown_ids_are_404(ctx, city, web):
    await web.login("east", ADMIN_PASSWORD)
    page = await web.get("/admin/users")
    assert page.status_code == 200 and "auditor_a" in page.text
    assert f'/admin/users/{city.users["auditor_a"]["_id"]}"' in page.text
    assert f'/admin/users/{city.users["east"]["_id"]}"' not in page.text  # oneself: no manage link
    # The city above the district is named in the crumbs but not a link to a 403.
    assert "中共示范市委员会" in page.text and f"/admin/users?org={city.org('root')}" not in page.text
    assert f"/admin/users?org={city.org('branch_a1')}" in page.text
    assert (await web.get(f"/admin/users?org={city.org('district_b')}")).status_code == 403
    assert (await web.get("/admin/users/0123456789abcdef01234567")).status_code == 404
    missing = await web.post_form("/admin/users/0123456789abcdef01234567/reset")
    assert missing.status_code == 404 and code_of(missing) == "user_not_found"
    await web.login("sec_a1", ADMIN_PASSWORD)
    assert (await web.get("/admin/users")).status_code == 403


async def test_account_posts_without_xsrf_are_refused(ctx, city, web):
    target = city.users["sec_a1"]["_id"]
    await web.login("east", ADMIN_PASSWORD)
    before = snapshot(await user_doc(ctx, city, "sec_a1"))
    for action in ("reset", "deactivate"):
        assert (await web.post_form(f"/admin/users/{target}/{action}", xsrf=False)).status_code == 403
    assert snapshot(await user_doc(ctx, city, "sec_a1")) == before
