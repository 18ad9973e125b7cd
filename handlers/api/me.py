"""``/api/v1/me``: the member's own record, binding, branch and timeline.

A member who left (any state but active) keeps two of these: their own
profile, with the ID-card number and phone masked (the WeChat account may no
longer be in their hands), and their own timeline. Everything else refuses
them (403 ``member_inactive``); see the login endpoint's description.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from bson import ObjectId

from handlers.api.base import ApiHandler, api_route, endpoint
from handlers.api.schemas import Page, PageQuery, Schema
from handlers.base import OBJECT_ID
from models.enums import MEMBER_CATEGORIES, MEMBER_STATES, ORG_TYPES, PARTY_STATUSES
from wxbackend.fieldcrypto import mask_id_card, mask_phone
from wxbackend.services.orgs import members, mpauth, orgtree, timeline

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=30)]
IdCardText = Annotated[str, msgspec.Meta(pattern=r"^\s*\d{17}[\dXx]\s*$", description="18位身份证号码")]
PhoneText = Annotated[str, msgspec.Meta(pattern=r"^(1[3-9]\d{9})?$", description="档案登记了手机号的须填写")]
Base64Text = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9+/]+={0,2}$", max_length=4096)]


class OrgBrief(Schema):
    id: str
    name: str


class Bindings(Schema):
    official_account: bool
    mini_program: bool


class MemberProfile(Schema):
    id: str
    name: str
    gender: str | None
    ethnicity: str | None
    birth_date: str | None
    education: str | None
    id_card: str
    phone: str | None
    party_status: str
    party_status_label: str
    joined_on: str | None
    full_on: str | None
    category_label: str
    branch: OrgBrief
    bindings: Bindings
    active: bool = True     # false: the member has left; id_card and phone come masked
    state_label: str = "正常"


class BindRequest(Schema):
    name: Name
    id_card: IdCardText
    phone: PhoneText = ""


class PhoneRequest(Schema):
    code: Annotated[str, msgspec.Meta(pattern="^[!-~]{1,256}$", description="getPhoneNumber 返回的 code")] | None = None
    encrypted_data: Base64Text | None = None
    iv: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9+/]{22}==$")] | None = None


class PhoneResult(Schema):
    outcome: str  # "verified" | "recorded"


class RosterMember(Schema):
    id: str
    name: str
    party_status_label: str


class BranchView(Schema):
    id: str
    name: str
    type_label: str
    secretary: str | None
    member_count: int
    members: Page[RosterMember]


class TimelineEntry(Schema):
    at: str
    kind: str
    title: str


class TimelineQuery(Schema):
    limit: Annotated[int, msgspec.Meta(ge=1, le=50)] = 20


def profile(ctx: Any, member: dict[str, Any], branch_name: str) -> MemberProfile:
    """The owner's view: an active owner sees their own personal data unmasked.

    A member who left sees it masked, and no birth date (it is the masked digits):
    the WeChat account may have passed to someone else (a deceased member's phone).
    """
    active = member["state"] == "active"
    card = ctx.cipher.decrypt(member["id_card_enc"], purpose="id_card")
    phone = ctx.cipher.decrypt(member["phone_enc"], purpose="phone") if member.get("phone_enc") else None
    if not active:
        card, phone = mask_id_card(card), mask_phone(phone) if phone else None
    return MemberProfile(
        id=str(member["_id"]), name=member["name"], gender=member.get("gender"),
        ethnicity=member.get("ethnicity"), birth_date=member.get("birth_date") if active else None,
        education=member.get("education"), id_card=card, phone=phone,
        party_status=member["party_status"], party_status_label=PARTY_STATUSES[member["party_status"]],
        joined_on=member.get("joined_on"), full_on=member.get("full_on"),
        category_label=MEMBER_CATEGORIES.get(member.get("category"), ""),
        branch=OrgBrief(id=str(member["org_id"]), name=branch_name),
        bindings=Bindings(official_account=bool(member.get("oa_openid")),
                          mini_program=bool(member.get("mp_openid"))),
        active=active, state_label=MEMBER_STATES.get(member["state"], member["state"]))


class MeHandler(ApiHandler):
    @endpoint("我的党员信息", response=MemberProfile, bound=True, former_members=True, tags=("me",),
              description="本人的党员档案。党员状态不是“正常”的（已转出、停止党籍、已去世）也可查看，"
              "但 active 为 false，身份证号码和手机号码打码，不返回出生日期。")
    async def get(self) -> MemberProfile:
        member = await mpauth.current_member(self.ctx, self.session, former_ok=True)
        branch = await _branch_name(self, member["org_id"])
        return profile(self.ctx, member, branch)


class BindHandler(ApiHandler):
    @endpoint("绑定党员身份", request=BindRequest, response=MemberProfile, errors=(409, 422), idempotent=True,
              tags=("me",), description="姓名、身份证号码（档案登记了手机号的须填写手机号）与党员档案一致即可绑定。"
              "信息不一致、档案已绑定其他微信号、档案状态不是“正常”，答复相同（422 bind_mismatch，并消耗一次机会）。"
              "同一微信号、同一网络、同一姓名及全市的失败次数各有上限，超过即锁定（429 bind_locked，"
              "Retry-After 为剩余秒数）；同一姓名被锁定时通知其所在支部书记。")
    async def post(self, body: BindRequest) -> MemberProfile:
        member = await mpauth.bind(self.ctx, self.session, name=body.name, id_card=body.id_card,
                                   phone=body.phone, ip=self.client_ip)
        return profile(self.ctx, member, await _branch_name(self, member["org_id"]))


class PhoneHandler(ApiHandler):
    @endpoint("用微信手机号核验档案手机号", request=PhoneRequest, response=PhoneResult, bound=True,
              errors=(422,), tags=("me",))
    async def post(self, body: PhoneRequest) -> PhoneResult:
        member = await mpauth.current_member(self.ctx, self.session)
        outcome = await mpauth.verify_phone(self.ctx, self.session, member, code=body.code,
                                            encrypted_data=body.encrypted_data, iv=body.iv)
        return PhoneResult(outcome=outcome)


class MyBranchHandler(ApiHandler):
    @endpoint("我的支部", query=PageQuery, response=BranchView, bound=True, tags=("me",))
    async def get(self, query: PageQuery) -> BranchView:
        member = await mpauth.current_member(self.ctx, self.session)
        return await branch_view(self, member, member["org_id"], query)


class BranchHandler(ApiHandler):
    @endpoint("支部信息（仅限本支部）", query=PageQuery, response=BranchView, bound=True,
              errors=(404,), tags=("me",))
    async def get(self, org_id: str, query: PageQuery) -> BranchView:
        member = await mpauth.current_member(self.ctx, self.session)
        return await branch_view(self, member, ObjectId(org_id), query)


async def branch_view(handler: ApiHandler, member: dict[str, Any], org_id: ObjectId,
                      query: PageQuery) -> BranchView:
    org, rows, cursor = await members.roster(handler.ctx, member, org_id, query.cursor, query.limit)
    items = [RosterMember(id=str(r["_id"]), name=r["name"],
                          party_status_label=members.present(handler.ctx, r)["party_status_label"])
             for r in rows]
    return BranchView(id=str(org["_id"]), name=org["name"], type_label=ORG_TYPES[org["type"]],
                      secretary=(org.get("secretary") or {}).get("name"),
                      member_count=org["member_count"], members=Page(items=items, next_cursor=cursor))


class TimelineHandler(ApiHandler):
    @endpoint("我的动态", query=TimelineQuery, response=Page[TimelineEntry], bound=True, former_members=True,
              tags=("me",), description="本人档案的历史。党员状态不是“正常”的也可查看本人的历史记录。")
    async def get(self, query: TimelineQuery) -> Page[TimelineEntry]:
        member = await mpauth.current_member(self.ctx, self.session, former_ok=True)
        entries = await timeline.timeline(self.ctx, member, query.limit)
        return Page(items=[TimelineEntry(at=e.at.isoformat(), kind=e.kind, title=e.title) for e in entries])


async def _branch_name(handler: ApiHandler, org_id: ObjectId) -> str:
    return (await orgtree.snapshot(handler.ctx)).name(org_id)


ROUTES = [
    api_route("/api/v1/me", MeHandler),
    api_route("/api/v1/me/bind", BindHandler),
    api_route("/api/v1/me/phone", PhoneHandler),
    api_route("/api/v1/me/branch", MyBranchHandler),
    api_route("/api/v1/me/timeline", TimelineHandler),
    api_route("/api/v1/branches/{org_id}", BranchHandler, org_id=OBJECT_ID),
]
