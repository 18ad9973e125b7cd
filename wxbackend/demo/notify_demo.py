"""``serve --demo``: a worker beside the server, and an outbox worth looking at.

On every demo start the notification kinds get template ids the sandbox
accepts (``[notify] demo_template_prefix``), the sandbox (which keeps its
users in memory only) learns again every member bound to the official account
or the mini-program, with the subscribe grants they gave, so that messages to
them are delivered after a restart too, and a worker subprocess starts with
the server's settings. On the first start it also:

- lets a few members of one branch follow the official account (the sandbox
  learns them as followers); the README's example member 演示党员 is left
  unbound, for the walkthroughs to bind;
- links that branch's demo secretary account to the branch's 书记, who
  follows too, so the secretary's daily digest arrives by WeChat;
- sends a notice from the district committee to its whole subtree, and
  today's digest to that secretary, so the outbox shows messages delivered::

      worker = await notify_demo.start(rt.ctx, settings)   # after the sandbox started
      ...
      worker.stop()
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import httpx
from bson import ObjectId

from models import members as members_model
from models import notices as notices_model
from models import notify_grants as grants_model
from models import notify_recipients as recipients_model
from models import orgs as orgs_model
from models import users as users_model
from wxbackend.context import AppContext
from wxbackend.demo import seed
from wxbackend.services.accounts.access import Actor
from wxbackend.services.notify import Kind, digest, notices
from wxbackend.services.orgs import orgtree
from wxbackend.settings import Settings
from wxbackend.worker import DemoWorker, start_demo_worker

log = logging.getLogger("wxbackend.demo")

FOLLOWERS = 8


def use_demo_templates(settings: Settings, kinds: Iterable[Kind]) -> None:
    """Template ids for every kind that has none, so that the sandbox receives messages."""
    prefix = settings.notify.demo_template_prefix
    for kind in kinds:
        if hasattr(getattr(settings, kind.template_setting, None), "oa_template_id"):
            continue  # its own section ([meetings]) carries ids
        for channel in ("oa", "mp"):
            key = f"{kind.template_setting}_{channel}_template_id"
            if not getattr(settings.notify, key, ""):
                setattr(settings.notify, key, f"{prefix}{kind.name.upper()}_{channel.upper()}")


async def start(ctx: AppContext, settings: Settings) -> DemoWorker:
    """Demo templates, the bound members told to the sandbox, first-start notifications,
    and the worker subprocess."""
    use_demo_templates(settings, ctx.registry.kinds.values())
    try:
        await introduce_bound_members(ctx, settings)
    except Exception:  # the demo still serves; messages to bound members answer 40003
        log.exception("the sandbox was not told the bound members")
    try:
        if await _first_start(ctx):
            await _seed(ctx, settings)
    except Exception:  # the demo still serves without its sample notifications
        log.exception("demo notifications not created")
    return start_demo_worker(settings)


async def introduce_bound_members(ctx: AppContext, settings: Settings) -> int:
    """Tell the sandbox about every member bound to WeChat (it forgets them on restart).

    The demo's WeChat knows exactly the demo's bound members: official-account
    followers (as followers, or not) and mini-program users with the subscribe grants
    our database records. Returns how many members the sandbox learnt.
    """
    members = ctx.db[members_model.COLLECTION]
    projection = {"oa_openid": 1, "oa_following": 1, "mp_openid": 1, "unionid": 1}
    # Index ranges on the two sparse openid indexes: only bound members are read.
    oa = await members.find({"oa_openid": {"$gt": ""}}, projection).to_list()
    mp = await members.find({"mp_openid": {"$gt": ""}}, projection).to_list()
    templates = _mp_templates(settings)
    async with httpx.AsyncClient(base_url=settings.wechat.api_base, timeout=10) as sandbox:
        for member in oa:
            body: dict[str, Any] = {"following": member.get("oa_following", True)}
            if member.get("unionid"):
                body["unionid"] = member["unionid"]
            (await sandbox.post(f"/sandbox/users/{member['oa_openid']}", json=body)).raise_for_status()
        for member in mp:
            grants = {}
            for template_id in templates:
                left = await grants_model.counts(ctx.db, [member["_id"]], template_id)
                if left:
                    grants[template_id] = left[member["_id"]]
            body = {"unionid": member.get("unionid") or "", "grants": grants}
            (await sandbox.post(f"/sandbox/mp/users/{member['mp_openid']}", json=body)).raise_for_status()
    return len({m["_id"] for m in [*oa, *mp]})


def _mp_templates(settings: Settings) -> set[str]:
    """Every mini-program subscribe template id in the settings (demo ones included)."""
    return {value for values in settings.as_dict().values() for key, value in values.items()
            if key.endswith("mp_template_id") and isinstance(value, str) and value}


async def _first_start(ctx: AppContext) -> bool:
    tree = await orgtree.snapshot(ctx)
    roots = tree.children.get(None, [])
    return bool(roots) and not await notices_model.page(ctx.db, roots[0], None, ObjectId("0" * 24), 1)


async def _seed(ctx: AppContext, settings: Settings) -> None:
    secretary = await _demo_secretary(ctx)
    if secretary is None:
        return
    branch_id = secretary["roles"][0]["org_id"]
    example = await seed.api_example_member(ctx)
    people = [m for m in await recipients_model.members_in_orgs(ctx.db, [branch_id])
              if m.get("state") == "active" and m["_id"] != (example or {}).get("_id")]
    chief_id = await _chief(ctx, branch_id)
    # Half of the branch follows (the other half shows up in the secretary's digest).
    chosen = [m for m in people if m["_id"] != chief_id][:min(FOLLOWERS, len(people) // 2)]
    async with httpx.AsyncClient(base_url=settings.wechat.api_base, timeout=10) as sandbox:
        for i, member in enumerate(chosen):
            await _follow(ctx, sandbox, member["_id"], f"oDemo{i:02d}{str(member['_id'])[-6:]}")
        if chief_id is not None:
            await _follow(ctx, sandbox, chief_id, f"oDemoChief{str(chief_id)[-6:]}")
            await users_model.update(ctx.db, secretary["_id"], {"$set": {"member_id": chief_id}})
    tree = await orgtree.snapshot(ctx)
    district = _district_of(tree, branch_id)
    actor = Actor.system_actor("市委组织部（演示）")
    notice = await notices.send(ctx, actor, district, "members", "关于开展“学习贯彻党的二十大精神”主题党日的通知",
                                "各党支部：\n请于本月主题党日组织全体党员集中学习，做好签到和会议记录。\n"
                                "未关注公众号的同志可在小程序“我的通知”中查看本通知。")
    await digest.send_digest(ctx, await users_model.get(ctx.db, secretary["_id"]), ctx.clock.today().isoformat())
    print(f"demo notifications: notice {notice['_id']} to {tree.name(district)}; digest for "
          f"{secretary['username']}; see /admin/outbox and /admin/notices", flush=True)


async def _demo_secretary(ctx: AppContext) -> dict[str, Any] | None:
    tree = await orgtree.snapshot(ctx)
    for i in range(0, len(tree.order), 200):
        for user in await recipients_model.users_with_roles_in(ctx.db, tree.order[i:i + 200]):
            if user["username"].startswith("sec-") and user.get("roles"):
                return user
    return None


async def _chief(ctx: AppContext, branch_id: ObjectId) -> ObjectId | None:
    """The member recorded as the branch's 书记, if any."""
    org = await orgs_model.get(ctx.db, branch_id)
    return ((org or {}).get("secretary") or {}).get("member_id")


def _district_of(tree: orgtree.OrgTree, org_id: ObjectId) -> ObjectId:
    """The organisation right below the root on ``org_id``'s path."""
    path = [*tree.nodes[org_id].get("ancestors", []), org_id]
    return path[1] if len(path) > 1 else org_id


async def _follow(ctx: AppContext, sandbox: httpx.AsyncClient, member_id: ObjectId, openid: str) -> None:
    """A member who follows the official account: bound here, a follower in the sandbox."""
    await members_model.update_if(ctx.db, member_id, {"oa_openid": {"$exists": False}},
                                  {"$set": {"oa_openid": openid, "oa_following": True}})
    (await sandbox.post(f"/sandbox/users/{openid}", json={"following": True})).raise_for_status()
