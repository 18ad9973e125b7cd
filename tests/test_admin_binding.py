"""The management web's unbind button: ``POST /admin/members/<id>/unbind``."""

from __future__ import annotations

from models import audit as audit_model
from models import members as members_model
from tests.conftest import ADMIN_PASSWORD, actor_of
from tests.factories import member_fields
from wxbackend.services.orgs import binding, members


async def bound_member(ctx, city) -> dict:
    raw = member_fields("吴刚")
    member = await members.create(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), raw)
    await binding.bind(ctx, "oa", "o-admin", None, raw["name"], raw["id_card"], raw["phone"], "1.1.1.1")
    return member


async def test_secretary_sees_the_button_and_unbinds(ctx, city, web):
    member = await bound_member(ctx, city)
    await web.login("sec_a1", ADMIN_PASSWORD)
    page = await web.get(f"/admin/members/{member['_id']}")
    assert page.status_code == 200
    assert f'action="/admin/members/{member["_id"]}/unbind"' in page.text
    assert 'name="channel" value="oa"' in page.text and 'value="mp"' not in page.text  # mp not bound
    response = await web.post_form(f"/admin/members/{member['_id']}/unbind", {"channel": "oa"})
    assert response.status_code == 302
    assert response.headers["location"].startswith(f"/admin/members/{member['_id']}?msg=")
    assert "oa_openid" not in await members_model.get(ctx.db, member["_id"])
    entries = await audit_model.for_target(ctx.db, member["_id"])
    assert entries[0]["action"] == "member.unbind" and entries[0]["actor"]["name"] == "sec_a1"
    page = await web.get(f"/admin/members/{member['_id']}")
    assert "/unbind" not in page.text


async def test_auditor_has_no_button_and_cannot_unbind(ctx, city, web):
    member = await bound_member(ctx, city)
    await web.login("auditor_a", ADMIN_PASSWORD)
    page = await web.get(f"/admin/members/{member['_id']}")
    assert page.status_code == 200 and "/unbind" not in page.text
    response = await web.post_form(f"/admin/members/{member['_id']}/unbind", {"channel": "oa"})
    assert response.status_code == 403
    assert (await members_model.get(ctx.db, member["_id"]))["oa_openid"] == "o-admin"


async def test_unbind_without_xsrf_or_with_a_bad_channel_changes_nothing(ctx, city, web):
    member = await bound_member(ctx, city)
    await web.login("sec_a1", ADMIN_PASSWORD)
    response = await web.post_form(f"/admin/members/{member['_id']}/unbind", {"channel": "oa"}, xsrf=False)
    assert response.status_code == 403
    response = await web.post_form(f"/admin/members/{member['_id']}/unbind", {"channel": "sms"})
    assert response.status_code == 400 and "绑定渠道" in response.text
    response = await web.post_form(f"/admin/members/{member['_id']}/unbind", {"channel": "mp"})
    assert response.status_code == 422 and "未绑定小程序" in response.text
    assert (await members_model.get(ctx.db, member["_id"]))["oa_openid"] == "o-admin"
