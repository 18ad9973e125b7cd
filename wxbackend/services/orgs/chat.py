"""What a member can do by chatting with the official account: follow, bind, ask.

The answers of the organisations capability, declared in its ``capability.py``
(``ChatRoute``): follow (welcome + binding link), unfollow (recorded), the
keywords 绑定 / 我的支部 / 帮助, the menu keys below, and help for anything
else. Each handler gets the context and the inbound message and returns what the
member sees, in Chinese, built from their own data; no WeChat XML here. Other
capabilities declare their own keywords (meetings: 会议), and the help text lists
every keyword declared with a ``help`` line.
"""

from __future__ import annotations

from typing import Any

from cachetools import TTLCache

from models.enums import MEMBER_STATES, PARTY_STATUSES
from wxbackend.capability import ChatRoute
from wxbackend.context import AppContext
from wxbackend.services import orgs
from wxbackend.services.orgs import binding
from wxbackend.wechat.router import Inbound, Reply, Text

# Keys of the CLICK buttons of config/menu.json.
MENU_MY_BRANCH = "MY_BRANCH"
MENU_BIND = "BIND"
MENU_HELP = "HELP"
BIND_PATH = "/wechat/oa/bind"
# How long a process reuses a branch's name, secretary and counters (seconds), and how many it keeps.
BRANCH_CARD_TTL = 30.0
BRANCH_CARDS_MAX = 20_000
NOT_BOUND = "您还没有绑定党员身份。"


def bind_url(ctx: AppContext) -> str:
    """The binding page; opening it goes through WeChat's OAuth for the openid."""
    return ctx.settings.public_url + BIND_PATH


def bind_link(ctx: AppContext) -> str:
    return f'<a href="{bind_url(ctx)}">点此绑定党员身份</a>'


def help_text(ctx: AppContext, member: dict[str, Any] | None) -> str:
    keywords = [f"【{r.key}】{r.help}" for r in ctx.registry.chat if r.table == "keyword" and r.help]
    lines = ["您可以发送以下关键词：", *keywords, "也可以使用下方菜单。"]
    if member is None:
        lines.append(f"{NOT_BOUND}{bind_link(ctx)}")
    return "\n".join(lines)


async def on_subscribe(ctx: AppContext, msg: Inbound) -> Reply:
    member = await binding.record_follow(ctx, msg.openid, msg.scene)
    if member is None:
        return Text("欢迎关注党建e家！\n绑定党员身份后，可查看支部信息、接收组织生活通知。\n"
                    + bind_link(ctx))
    return Text(f"{member['name']}同志，欢迎回来！\n" + help_text(ctx, member))


async def on_unsubscribe(ctx: AppContext, msg: Inbound) -> None:
    # WeChat shows nothing to someone who left; the state is for picking channels later.
    await binding.record_unfollow(ctx, msg.openid)


async def on_help(ctx: AppContext, msg: Inbound) -> Reply:
    # Also a QR code whose scene no capability claims: say what we do rather than nothing.
    member = await binding.identity_for(ctx, "oa", msg.openid)
    return Text(help_text(ctx, member))


async def on_bind(ctx: AppContext, msg: Inbound) -> Reply:
    member = await binding.identity_for(ctx, "oa", msg.openid)
    if member is None:
        return Text(f"请用本人姓名和身份证号码完成绑定：{bind_link(ctx)}")
    return Text(f"您已绑定为{member['name']}。如需更换绑定，请联系支部书记解除后重新绑定。")


async def on_my_branch(ctx: AppContext, msg: Inbound) -> Reply:
    member = await binding.identity_for(ctx, "oa", msg.openid)
    if member is None:
        return Text(f"{NOT_BOUND}{bind_link(ctx)}")
    if member["state"] != "active":
        label = MEMBER_STATES.get(member["state"], member["state"])
        return Text(f"您的党员档案状态为“{label}”，不再显示支部信息。如有疑问请联系原所在党支部。")
    org = await branch_card(ctx, member["org_id"])
    return Text(branch_summary(member, org))


class BranchCards:
    """A process's branch cards: the least recently used go first, each expires after its TTL."""

    def __init__(self, ttl: float = BRANCH_CARD_TTL, size: int = BRANCH_CARDS_MAX) -> None:
        self.cards: TTLCache[Any, dict[str, Any]] = TTLCache(size, ttl)


async def branch_card(ctx: AppContext, org_id: Any) -> dict[str, Any]:
    """Name, secretary and counters of a branch, as chat shows them; cached briefly.

    Asked for on every 我的支部, the same branch by all its members: a process
    reads it from the database at most once per ``BRANCH_CARD_TTL`` seconds
    (so a new secretary or count shows within that time).
    """
    cards = ctx.state(BranchCards).cards
    card = cards.get(org_id)
    if card is None:
        org = await orgs.get(ctx, org_id)
        card = {k: org.get(k) for k in ("name", "secretary", "member_count", "full_member_count")}
        cards[org_id] = card
    return card


def branch_summary(member: dict[str, Any], org: dict[str, Any]) -> str:
    secretary = (org.get("secretary") or {}).get("name") or "暂未设置"
    status = PARTY_STATUSES.get(member.get("party_status"), "")
    return "\n".join([
        f"所在党组织：{org['name']}",
        f"支部书记：{secretary}",
        f"在册党员：{org.get('member_count', 0)}名（正式党员{org.get('full_member_count', 0)}名）",
        f"您的身份：{status}，党籍状态{MEMBER_STATES['active']}",
    ])


async def _help_for_media(ctx: AppContext, msg: Inbound) -> Reply:
    # Pictures, voice, locations ... are not understood yet: say what is.
    member = await binding.identity_for(ctx, "oa", msg.openid)
    return Text("暂时无法识别这类消息。\n" + help_text(ctx, member))


MEDIA = ("image", "voice", "video", "shortvideo", "location", "link", "file")

CHAT = (
    ChatRoute.event("subscribe", on_subscribe),
    ChatRoute.event("unsubscribe", on_unsubscribe),
    ChatRoute.keyword("我的支部", on_my_branch, help="查看所在党支部和您的党员状态"),
    ChatRoute.menu_key(MENU_MY_BRANCH, on_my_branch),
    ChatRoute.keyword("绑定", on_bind, help="绑定党员身份"),
    ChatRoute.menu_key(MENU_BIND, on_bind),
    ChatRoute.keyword("帮助", on_help, help="查看本说明"),
    ChatRoute.menu_key(MENU_HELP, on_help),
    # A QR code whose scene no capability claims, text and clicks nobody handles: help.
    ChatRoute.event("scan", on_help),
    ChatRoute.fallback_text(on_help),
    ChatRoute.fallback_menu(on_help),
    *(ChatRoute.message_type(kind, _help_for_media) for kind in MEDIA),
)
