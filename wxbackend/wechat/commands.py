"""CLI commands of the WeChat integration: ``sandbox`` and ``wechat menu push``.

::

    python -m wxbackend sandbox --port 9100 --callback http://127.0.0.1:8000/wechat/oa
    python -m wxbackend wechat menu push            # config/menu.json -> WeChat
    python -m wxbackend wechat menu push --dry-run  # print what would be sent

The sandbox takes the official account's and mini-program's credentials from
the settings; in embedded mode they are the development secrets generated in
the data dir, so the server and a separately started sandbox agree.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from wxbackend.settings import ROOT, Settings

DEFAULT_SANDBOX_PORT = 9100


def add_parsers(sub: Any) -> None:
    """Register ``sandbox`` and ``wechat`` on the CLI's subparsers."""
    sandbox = sub.add_parser("sandbox", help="run the local WeChat API emulator",
                             description="Run the WeChat sandbox: WeChat's server APIs, an "
                             "outbox of messages sent, and simulated users who call our "
                             "callback. See docs/WECHAT-SANDBOX.md.")
    sandbox.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    sandbox.add_argument("--port", type=int, default=DEFAULT_SANDBOX_PORT,
                         help=f"listen port (default {DEFAULT_SANDBOX_PORT})")
    sandbox.add_argument("--callback", help="our callback URL (default: <public url>/wechat/oa)")
    sandbox.add_argument("--mode", choices=["safe", "plain"],
                         help="message encryption (default: safe when an EncodingAESKey is set)")

    wechat = sub.add_parser("wechat", help="official-account administration",
                            description="Official-account administration through WeChat's API.")
    wsub = wechat.add_subparsers(dest="wechat_command", required=True, metavar="SUBCOMMAND")
    menu = wsub.add_parser("menu", help="the custom menu", description="The custom menu.")
    msub = menu.add_subparsers(dest="menu_command", required=True, metavar="ACTION")
    push = msub.add_parser("push", help="publish [wechat] menu_file",
                           description="Publish the menu of [wechat] menu_file (config/menu.json).")
    push.add_argument("--file", type=Path, help="menu JSON (default: [wechat] menu_file)")
    push.add_argument("--dry-run", action="store_true", help="print the menu, send nothing")


def cmd_sandbox(settings: Settings, args: argparse.Namespace) -> int:
    from wxbackend.runtime import install_signal_handlers
    from wxbackend.wechat.sandbox import SandboxConfig, start_sandbox

    callback = args.callback or settings.public_url + "/wechat/oa"
    try:
        config = SandboxConfig.from_settings(settings, callback_url=callback, mode=args.mode)
    except ValueError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if not (config.oa_appid and config.oa_secret and config.mp_appid and config.mp_secret):
        print("configuration error: set WXB_WECHAT_OA_APPID/_SECRET and WXB_WECHAT_MP_APPID/_SECRET",
              file=sys.stderr)
        return 2

    async def run() -> None:
        server, url = start_sandbox(config, args.host, args.port)
        print(f"WeChat sandbox on {url}/sandbox ({config.mode} mode) -> callback {callback}\n"
              f"point the server at it: WXB_WECHAT_API_BASE={url} WXB_WECHAT_OAUTH_BASE={url} "
              f"WXB_WECHAT_QRCODE_IMAGE_BASE={url}", flush=True)
        stopped = asyncio.Event()
        install_signal_handlers(stopped.set)
        await stopped.wait()
        server.stop()
    asyncio.run(run())
    return 0


def load_menu(path: Path, settings: Settings) -> dict[str, Any]:
    """The menu JSON without its ``_``-prefixed notes, ``{public_url}`` filled in."""
    path = path if path.is_absolute() else ROOT / path
    menu = json.loads(path.read_text(encoding="utf-8"))
    return _prepare(menu, settings.public_url)


def _prepare(value: Any, public_url: str) -> Any:
    if isinstance(value, dict):
        return {k: _prepare(v, public_url) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, list):
        return [_prepare(v, public_url) for v in value]
    if isinstance(value, str):
        return value.replace("{public_url}", public_url)
    return value


def cmd_wechat(settings: Settings, args: argparse.Namespace) -> int:
    from wxbackend.capability import Registry
    from wxbackend.runtime import open_runtime
    from wxbackend.wechat.client import oa_client
    from wxbackend.wechat.errors import WeChatError

    path = args.file or Path(settings.wechat.menu_file)
    try:
        menu = load_menu(path, settings)
    except (OSError, ValueError) as exc:
        print(f"error: cannot read menu {path}: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(json.dumps(menu, ensure_ascii=False, indent=2))
        return 0

    async def run() -> int:
        async with open_runtime(settings, Registry((), settings)) as rt:  # no capability needed
            try:
                await oa_client(rt.ctx).create_menu(menu)
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            except WeChatError as exc:
                print(f"error: WeChat refused the menu: {exc.errcode} {exc.errmsg}", file=sys.stderr)
                return 1
        print(f"菜单已发布：{len(menu['button'])} 个一级菜单")
        return 0
    return asyncio.run(run())
