"""``serve --demo``: the demo city, the WeChat sandbox and a worker, before the app starts.

Start-up prints little (the demo's console is kept to warnings unless
``WXB_LOG_VERBOSE=1`` or ``serve --demo --verbose``) and ends with a summary,
printed by the server once it listens: where to log in, the demo accounts,
and the two shell lines the README's walkthroughs use::

    S=http://127.0.0.1:41234
    API=http://127.0.0.1:8000/api/v1
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from models.enums import ROLES
from wxbackend.context import AppContext
from wxbackend.demo import notify_demo, seed
from wxbackend.server import Prepared
from wxbackend.settings import Settings
from wxbackend.wechat.sandbox import start_for_demo

RULE = "─" * 72


def _progress(verbose: bool) -> Callable[[str], None]:
    """Seeding progress on stderr; without ``verbose`` not the index-by-index lines."""
    def show(message: str) -> None:
        if verbose or not message.startswith("seed: index "):
            print(message, file=sys.stderr, flush=True)
    return show


async def prepare(ctx: AppContext, settings: Settings) -> Prepared:
    """Seed the city (once), start the sandbox and the worker; their shutdown and summary."""
    login = await seed.ensure_demo(ctx, settings.seed.demo_scale,
                                   progress=_progress(settings.log.verbose))
    sandbox = start_for_demo(settings)  # points settings.wechat's base URLs at itself
    demo_worker = await notify_demo.start(ctx, settings)  # bound members, sample outbox, a worker
    summary = await summary_text(ctx, settings, login)

    async def stop() -> None:
        await demo_worker.stop()
        sandbox.stop()
    return Prepared(stop, summary)


def local_url(settings: Settings) -> str:
    """Where this machine reaches the server (a wildcard listen address is 127.0.0.1)."""
    host = settings.http.host
    local = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host  # noqa: S104 (a comparison)
    return f"http://{local}:{settings.http.port}"


async def summary_text(ctx: AppContext, settings: Settings, login: seed.DemoLogin) -> str:
    """The last thing ``serve --demo`` prints: web address, accounts, sandbox, S= and API=."""
    web, sandbox = local_url(settings), settings.wechat.api_base
    lines = [RULE, "党建e家 演示环境已启动", f"管理后台：{web}/admin/"]
    if login.username:
        lines.append(f"演示账号（密码均为 {login.password}；公开的演示密码，仅用于虚构的演示数据）：")
        accounts = await seed.demo_accounts(ctx)
        width = max(len(" ".join(names)) for names in accounts.values())
        for role, names in accounts.items():
            lines.append(f"  {' '.join(names):<{width}}  {ROLES.get(role, role)}")
    else:
        lines.append(login.note)
    verbose = "" if settings.log.verbose else "；完整日志：WXB_LOG_VERBOSE=1 make run"
    lines += [f"微信沙箱：{sandbox}/sandbox（说明见 docs/WECHAT-SANDBOX.md）",
              "README 中的 curl 演练使用下面两个变量，复制到终端即可：",
              f"S={sandbox}",
              f"API={web}/api/v1",
              f"Ctrl-C 停止服务器、工作进程、沙箱和内置数据库{verbose}",
              RULE]
    return "\n".join(lines)
