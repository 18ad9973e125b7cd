from tests.conftest import ADMIN_PASSWORD, actor_of
from tests.factories import member_fields
from wxbackend.services.orgs import members


async def test_secretary_logs_in_and_sees_branch(ctx, city, web):
    await members.create(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), member_fields("李四"))
    await web.login("sec_a1", ADMIN_PASSWORD)
    home = await web.get("/admin/")
    assert home.status_code == 302
    page = await web.get(home.headers["location"])
    assert page.status_code == 200, page.text
    assert "李四" in page.text
    assert "东区第一党支部" in page.text
