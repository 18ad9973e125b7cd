"""Party members: records, personal data, lists and search.

``validate_fields`` is the one place that checks a member's fields; the web
form and the spreadsheet import both use it, so a row is accepted by one
exactly when it is accepted by the other::

    clean, errors = validate_fields({"name": "张三", "id_card": "...", ...}, today=ctx.clock.today())
    member = await members.create(ctx, actor, branch_id, fields)
    page = await members.page(ctx, actor, district_id, cursor=None)

Personal data leaves this module masked (:func:`present`) or through the audited
:func:`unmask` (on the web by post/redirect/get, :mod:`.unmasking`); anything that
answers for a full ID-card number or phone (exact search, a number already
registered) goes through :mod:`.lookups`. The paged lists (``page``, ``browse``,
``search_names``) live in :mod:`.member_lists` and are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from models import members as members_model
from models import orgs as orgs_model
from models.enums import (
    EDUCATIONS,
    GENDERS,
    MEMBER_CATEGORIES,
    MEMBER_STATES,
    PARTY_STATUSES,
    parse_label,
)
from wxbackend.context import AppContext
from wxbackend.errors import Conflict, Forbidden, InvalidInput, NotFound, object_id
from wxbackend.fieldcrypto import mask_id_card, mask_phone
from wxbackend.idcard import parse_id_card
from wxbackend.services import orgs
from wxbackend.services.accounts import audit, mpsessions
from wxbackend.services.accounts.access import Actor
from wxbackend.services.orgs import lookups
from wxbackend.services.orgs.member_lists import (  # noqa: F401 - the lists, as callers know them
    PAGE_SIZE,
    MemberPage,
    browse,
    decode_cursor,
    encode_cursor,
    page,
    search_names,
)

PHONE = lookups.PHONE

FIELD_LABELS = {
    "name": "姓名", "gender": "性别", "ethnicity": "民族", "birth_date": "出生日期",
    "education": "学历", "id_card": "身份证号码", "phone": "手机号码",
    "party_status": "党员状态", "joined_on": "入党日期", "full_on": "转正日期",
    "category": "人员类别",
}
# Stored fields a page never gets from present(): the ciphertexts, their blind
# indexes, and the birth date, which is digits 7-14 of the ID-card number.
NOT_PRESENTED = ("birth_date", "id_card_enc", "id_card_bidx", "phone_enc", "phone_bidx")
REGISTERED = "该身份证号码已在本平台登记党员信息；如需调入本组织，请办理组织关系转接"


@dataclass
class FieldError:
    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


def _date(value: str, field: str, errors: list[FieldError]) -> date | None:
    value = (value or "").strip()
    if not value:
        return None
    for fmt in ("%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%Y%m%d"):
        try:
            return datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    errors.append(FieldError(field, "日期格式应为 YYYY-MM-DD"))
    return None


def _choice(table: dict[str, str], value: str, field: str, errors: list[FieldError],
            required: bool = True) -> str | None:
    value = (value or "").strip()
    if not value:
        if required:
            errors.append(FieldError(field, "不能为空"))
        return None
    code = parse_label(table, value)
    if code is None:
        errors.append(FieldError(field, "应为以下之一：" + "、".join(table.values())))
    return code


def validate_fields(raw: dict[str, Any], *, today: date) -> tuple[dict[str, Any], list[FieldError]]:
    """Check and normalise a member's fields; dates come back as ISO strings."""
    errors: list[FieldError] = []
    get = lambda k: str(raw.get(k) or "").strip()  # noqa: E731
    clean: dict[str, Any] = {"name": get("name")}
    if not clean["name"] or len(clean["name"]) > 30:
        errors.append(FieldError("name", "姓名不能为空，且不超过30个字"))
    card = None
    try:
        card = parse_id_card(get("id_card"), today=today)
        clean["id_card"] = card.number
    except InvalidInput as exc:
        errors.append(FieldError("id_card", exc.message))
    birth = _date(get("birth_date"), "birth_date", errors)
    gender = get("gender")
    if gender and gender not in GENDERS:
        errors.append(FieldError("gender", "性别应为男或女"))
    if card:
        if birth and birth != card.birth_date:
            errors.append(FieldError("birth_date", "出生日期与身份证号码不一致"))
        if gender in GENDERS and gender != card.gender:
            errors.append(FieldError("gender", "性别与身份证号码不一致"))
        birth, gender = card.birth_date, card.gender
    clean["birth_date"] = birth.isoformat() if birth else None
    clean["gender"] = gender or None
    clean["ethnicity"] = get("ethnicity") or "汉族"
    education = get("education")
    if education and education not in EDUCATIONS:
        errors.append(FieldError("education", "学历应为以下之一：" + "、".join(EDUCATIONS)))
    clean["education"] = education or None
    phone = get("phone").replace(" ", "").replace("-", "")
    if phone and not PHONE.match(phone):
        errors.append(FieldError("phone", "手机号码应为11位，以1开头"))
    clean["phone"] = phone or None
    clean["party_status"] = _choice(PARTY_STATUSES, get("party_status"), "party_status", errors)
    clean["category"] = _choice(MEMBER_CATEGORIES, get("category"), "category", errors)
    joined = _date(get("joined_on"), "joined_on", errors)
    full = _date(get("full_on"), "full_on", errors)
    _check_party_dates(clean, birth, joined, full, today, errors)
    return clean, errors


def _check_party_dates(clean: dict[str, Any], birth: date | None, joined: date | None,
                       full: date | None, today: date, errors: list[FieldError]) -> None:
    if joined is None:
        if not any(e.field == "joined_on" for e in errors):
            errors.append(FieldError("joined_on", "入党日期不能为空"))
    elif joined > today:
        errors.append(FieldError("joined_on", "入党日期不能晚于今天"))
    elif birth and (joined.year - birth.year, joined.month, joined.day) < (18, birth.month, birth.day):
        errors.append(FieldError("joined_on", "入党时应年满18周岁"))
    if clean.get("party_status") == "full":
        if full is None and not any(e.field == "full_on" for e in errors):
            errors.append(FieldError("full_on", "正式党员应填写转正日期"))
        elif full and joined and full < joined:
            errors.append(FieldError("full_on", "转正日期不能早于入党日期"))
    elif clean.get("party_status") == "probationary" and full:
        errors.append(FieldError("full_on", "预备党员不应有转正日期"))
    clean["joined_on"] = joined.isoformat() if joined else None
    clean["full_on"] = full.isoformat() if full and clean.get("party_status") == "full" else None


def raise_field_errors(errors: list[FieldError]) -> None:
    if errors:
        text = "；".join(f"{FIELD_LABELS.get(e.field, e.field)}：{e.message}" for e in errors)
        raise InvalidInput("invalid_member", text, details=[e.as_dict() for e in errors])


def personal_fields(ctx: AppContext, clean: dict[str, Any]) -> dict[str, Any]:
    """Encrypted columns and blind indexes for the ID-card number and phone."""
    card = clean["id_card"]
    phone = clean.get("phone")
    return {
        "id_card_enc": ctx.cipher.encrypt(card, purpose="id_card"),
        "id_card_bidx": ctx.cipher.blind_index(card, "id_card"),
        "phone_enc": ctx.cipher.encrypt(phone, purpose="phone") if phone else None,
        "phone_bidx": ctx.cipher.blind_index(phone, "phone") if phone else None,
    }


def new_document(ctx: AppContext, clean: dict[str, Any], org: dict[str, Any]) -> dict[str, Any]:
    now = ctx.clock.now()
    doc = {k: v for k, v in clean.items() if k not in ("id_card", "phone")}
    doc.update(personal_fields(ctx, clean))
    doc.update({"_id": ObjectId(), "org_id": org["_id"], "org_ancestors": list(org["org_ancestors"]),
                "group_id": None, "state": "active", "created_at": now, "updated_at": now})
    return doc


def parse_id(raw: str | ObjectId) -> ObjectId:
    return object_id(raw, "member_not_found", "找不到该党员")


async def create(ctx: AppContext, actor: Actor, org_id: ObjectId, fields: dict[str, Any]) -> dict[str, Any]:
    org = await orgs.get(ctx, org_id)
    actor.require("member.edit", org["org_ancestors"])
    orgs.member_org_check(org)
    clean, errors = validate_fields(fields, today=ctx.clock.today())
    raise_field_errors(errors)
    doc = new_document(ctx, clean, org)
    # Success or 409 answers whether the number is registered: one lookup is held meanwhile.
    await lookups.take(ctx, actor)
    counted = False
    try:
        await members_model.insert_many(ctx.db, [doc])
    except Exception as exc:
        if _is_duplicate(exc):
            counted = await _registered(ctx, actor, "create", org, doc["id_card_bidx"])
            raise Conflict("id_card_exists", REGISTERED) from None
        raise
    finally:
        if not counted:
            await lookups.give_back(ctx, actor)
    await orgs_model.adjust_member_counts(ctx.db, org["_id"], org["org_ancestors"], 1,
                                          1 if doc["party_status"] == "full" else 0)
    await audit.record(ctx, actor, "member.create", "member", doc["_id"], doc["name"], doc["org_ancestors"])
    return doc


async def _registered(ctx: AppContext, actor: Actor, via: str, org: dict[str, Any], bidx: str) -> bool:
    """A number entered on ``org``'s behalf is registered already: audited, never saying
    where. Whether it lies outside what the actor may unmask (the held lookup is spent)."""
    existing = await members_model.by_id_card(ctx.db, bidx)
    return await lookups.found_registered(ctx, actor, via, org, [existing] if existing else []) > 0


def _is_duplicate(exc: Exception) -> bool:
    if isinstance(exc, DuplicateKeyError):
        return True
    details = getattr(exc, "details", None) or {}
    return any(e.get("code") == 11000 for e in details.get("writeErrors", []))


async def get_visible(ctx: AppContext, actor: Actor, member_id: str | ObjectId) -> dict[str, Any]:
    member = await members_model.get(ctx.db, parse_id(member_id))
    if member is None:
        raise NotFound("member_not_found", "找不到该党员")
    actor.require("member.view", member["org_ancestors"])
    return member


async def update(ctx: AppContext, actor: Actor, member_id: ObjectId, fields: dict[str, Any], *,
                 clear_phone: bool = False) -> dict[str, Any]:
    """Change a member's fields.

    A blank ID-card number or phone keeps the stored one: the edit form shows
    them masked, so that opening it reveals nothing and writes no audit entry.
    ``clear_phone`` removes the phone.
    """
    member = await get_visible(ctx, actor, member_id)
    actor.require("member.edit", member["org_ancestors"])
    clean, errors = validate_fields(_keep_stored(ctx, member, fields, clear_phone), today=ctx.clock.today())
    raise_field_errors(errors)
    changes = {k: v for k, v in clean.items() if k not in ("id_card", "phone")}
    changes.update(personal_fields(ctx, clean))
    changes["updated_at"] = ctx.clock.now()
    # A new number is an answer like a create's, and holds a lookup like one.
    new_card = changes["id_card_bidx"] != member["id_card_bidx"]
    if new_card:
        await lookups.take(ctx, actor)
    # Conditional on the state we read: a concurrent edit of the status cannot
    # leave the full-member counter off by one.
    expected = {"state": member["state"], "party_status": member["party_status"]}
    counted = False
    try:
        updated = await members_model.update_if(ctx.db, member["_id"], expected, {"$set": changes})
    except DuplicateKeyError:
        org = await orgs.get(ctx, member["org_id"])
        counted = await _registered(ctx, actor, "update", org, changes["id_card_bidx"])
        raise Conflict("id_card_exists", REGISTERED) from None
    finally:
        if new_card and not counted:
            await lookups.give_back(ctx, actor)
    if updated is None:
        raise Conflict("member_changed", "党员信息已被其他人修改，请刷新后重试")
    if member["state"] == "active" and member["party_status"] != updated["party_status"]:
        full = 1 if updated["party_status"] == "full" else -1
        await orgs_model.adjust_member_counts(ctx.db, member["org_id"], [], 0, full)
    changed = sorted(k for k in FIELD_LABELS if _differs(ctx, member, updated, k))
    await audit.record(ctx, actor, "member.update", "member", member["_id"], updated["name"],
                       member["org_ancestors"], {"fields": changed})
    return updated


def _keep_stored(ctx: AppContext, member: dict[str, Any], fields: dict[str, Any],
                 clear_phone: bool) -> dict[str, Any]:
    """The form's fields with the stored numbers where it left them blank."""
    fields = dict(fields)
    if not str(fields.get("id_card") or "").strip():
        fields["id_card"] = _decrypt(ctx, member["id_card_enc"], "id_card")
        # From the stored number, whatever the form says: checking a typed birth date
        # against the hidden digits would tell the editor whether they guessed right.
        fields["birth_date"] = fields["gender"] = ""
    if clear_phone:
        fields["phone"] = ""
    elif not str(fields.get("phone") or "").strip():
        fields["phone"] = _decrypt(ctx, member.get("phone_enc"), "phone")
    return fields


def _differs(ctx: AppContext, before: dict[str, Any], after: dict[str, Any], field: str) -> bool:
    if field in ("id_card", "phone"):
        return before.get(f"{field}_bidx") != after.get(f"{field}_bidx")
    return before.get(field) != after.get(field)


async def set_state(ctx: AppContext, actor: Actor, member_id: ObjectId, state: str) -> dict[str, Any]:
    """Mark a member deceased, stopped or transferred out (or active again)."""
    if state not in MEMBER_STATES:
        raise InvalidInput("member_state", "党员状态无效")
    member = await get_visible(ctx, actor, member_id)
    actor.require("member.edit", member["org_ancestors"])
    if member["state"] == state:
        return member
    if state == "active":
        orgs.member_org_check(await orgs.get(ctx, member["org_id"]))
    updated = await members_model.update_if(
        ctx.db, member["_id"], {"state": member["state"]},
        {"$set": {"state": state, "updated_at": ctx.clock.now()}})
    if updated is None:
        raise Conflict("member_changed", "党员信息已被其他人修改，请刷新后重试")
    sign = 1 if state == "active" else (-1 if member["state"] == "active" else 0)
    await orgs_model.adjust_member_counts(ctx.db, member["org_id"], member["org_ancestors"], sign,
                                          sign if member["party_status"] == "full" else 0)
    await audit.record(ctx, actor, "member.state", "member", member["_id"], member["name"],
                       member["org_ancestors"], {"from": member["state"], "to": state})
    # Mini-program tokens carry the state they were opened in: any change ends them
    # (a member who left keeps only what mpauth.current_member allows former members).
    await mpsessions.revoke_member(ctx, member["_id"])
    return updated


def present(ctx: AppContext, member: dict[str, Any]) -> dict[str, Any]:
    """A member as pages show it: personal data masked, labels in Chinese.

    The birth date is shown as the year only: the full date beside the masked
    number left two digits of it to guess.
    """
    row = {k: v for k, v in member.items() if k not in NOT_PRESENTED}
    row["birth_year"] = (member.get("birth_date") or "")[:4]
    row["id_card_masked"] = mask_id_card(_decrypt(ctx, member.get("id_card_enc"), "id_card"))
    phone = _decrypt(ctx, member.get("phone_enc"), "phone")
    row["phone_masked"] = mask_phone(phone) if phone else ""
    row["party_status_label"] = PARTY_STATUSES.get(member.get("party_status"), "")
    row["category_label"] = MEMBER_CATEGORIES.get(member.get("category"), "")
    row["state_label"] = MEMBER_STATES.get(member.get("state"), "")
    return row


def _decrypt(ctx: AppContext, token: Any, purpose: str) -> str:
    return ctx.cipher.decrypt(token, purpose=purpose) if token else ""


async def unmask(ctx: AppContext, actor: Actor, member_id: ObjectId) -> dict[str, str]:
    """The clear ID-card number and phone, for an admin allowed to see them; audited."""
    member = await get_visible(ctx, actor, member_id)
    actor.require("member.unmask", member["org_ancestors"])
    await audit.record(ctx, actor, "member.unmask", "member", member["_id"], member["name"],
                       member["org_ancestors"], {"fields": ["id_card", "phone"]})
    return clear_numbers(ctx, member)


def clear_numbers(ctx: AppContext, member: dict[str, Any]) -> dict[str, str]:
    """A member's clear ID-card number and phone: only for a view :func:`unmask` audited."""
    return {"id_card": _decrypt(ctx, member["id_card_enc"], "id_card"),
            "phone": _decrypt(ctx, member.get("phone_enc"), "phone")}


async def search(ctx: AppContext, actor: Actor, scope_id: ObjectId, query: str,
                 limit: int = PAGE_SIZE, *, org: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """By name prefix, or by exact full ID-card number or phone, inside the actor's scope.

    An exact search needs ``member.unmask`` there, costs one of the admin's
    lookups and is audited (:mod:`.lookups`): with the masked number on the page
    it is otherwise an oracle for the hidden digits.
    """
    org = org if org is not None and org["_id"] == scope_id else await orgs.get(ctx, scope_id)
    actor.require("member.view", org["org_ancestors"])
    query = query.strip()
    exact = lookups.exact_query(query) if query else None
    if exact is None:
        return (await search_names(ctx, actor, org, query, limit=limit)).rows
    kind, value = exact
    lookups.require_exact_search(actor, org)
    await lookups.take(ctx, actor)
    bidx = ctx.cipher.blind_index(value, kind)
    if kind == "id_card":
        found = await members_model.by_id_card(ctx.db, bidx)
        candidates = [found] if found else []
    else:
        candidates = await members_model.by_phone(ctx.db, bidx)
    # Only what lies in the searched subtree: nothing leaks from elsewhere.
    rows = [m for m in candidates if scope_id in m["org_ancestors"]][:limit]
    await lookups.searched(ctx, actor, org, kind, rows)
    return rows


async def roster(ctx: AppContext, member: dict[str, Any], org_id: ObjectId, cursor: str | None,
                 limit: int) -> tuple[dict[str, Any], list[dict[str, Any]], str | None]:
    """A member's view of a branch: only their own branch, names of its members."""
    if org_id != member["org_id"]:
        raise Forbidden("out_of_scope", "只能查看本支部的党员名单")
    org = await orgs.get(ctx, org_id)
    rows, next_cursor = await page(ctx, Actor.system_actor("member-roster"), org_id, cursor, limit, org=org)
    return org, [r for r in rows if r["state"] == "active"], next_cursor
