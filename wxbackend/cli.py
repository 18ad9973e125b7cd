"""Command line: ``python -m wxbackend <command>``; each command has ``--help``."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from wxbackend import worker as worker_command
from wxbackend.errors import DomainError
from wxbackend.logs import configure_logging
from wxbackend.settings import ConfigError, Settings, load_settings
from wxbackend.wechat import commands as wechat_commands

log = logging.getLogger("wxbackend")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wxbackend",
                                     description="Party-building platform backend on WeChat.")
    parser.add_argument("--config", help="TOML file read after config/default.toml")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the HTTP server",
                           description="Run the HTTP server. Starts embedded SecantusDB and Redis "
                           "when WXB_MONGODB_URI / WXB_REDIS_URL are unset.")
    serve.add_argument("--host", help="listen address (default: [http] host)")
    serve.add_argument("--port", type=int, help="listen port (default: [http] port)")
    serve.add_argument("--demo", action="store_true",
                       help="seed the demo city on first start and print the demo login")
    serve.add_argument("--verbose", action="store_true",
                       help="with --demo: the full log (default: warnings, errors and the "
                       "start-up summary; also WXB_LOG_VERBOSE=1)")

    seed = sub.add_parser("seed", help="build the deterministic demo city",
                          description="Build the synthetic demo city (fixed random seed).")
    seed.add_argument("--scale", type=float, default=0.02,
                      help="1.0 = 14,000 organisations and 219,000 members (default 0.02)")

    imp = sub.add_parser("import-members", help="import members from .xlsx or .csv",
                         description="Import members from the spreadsheet template "
                         "(templates/member-import-template.xlsx). All or nothing.")
    imp.add_argument("file", type=Path)
    imp.add_argument("--org-code", help="branch for rows without a 党组织编码 column")

    admin = sub.add_parser("create-admin", help="create a management-web user",
                           description="Create a user. The password is read from "
                           "WXB_ADMIN_PASSWORD or asked for.")
    admin.add_argument("--username", required=True)
    admin.add_argument("--name", default="", help="display name")
    admin.add_argument("--role", required=True,
                       choices=["city_admin", "committee_admin", "secretary", "auditor"])
    admin.add_argument("--org-code", help="organisation the role covers (default: the root)")

    sub.add_parser("check-config", help="validate settings and print them (secrets hidden)",
                   description="Validate the settings and print the effective values.")
    wechat_commands.add_parsers(sub)  # sandbox, wechat menu push
    worker_command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log.level, settings.log.format)
    command: Callable[[Settings, argparse.Namespace], int] = COMMANDS[args.command]
    try:
        return command(settings, args)
    except DomainError as exc:
        print(f"error: {exc.message} ({exc.code})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _without_password(value: object) -> object:
    """A URL's password as *** (redis://:pw@host, mongodb://user:pw@host), anything else as it is."""
    if isinstance(value, str):
        return re.sub(r"(://[^:/@]*:)[^@/]+@", r"\1***@", value)
    return value


def cmd_check_config(settings: Settings, args: argparse.Namespace) -> int:
    hidden = ("secret", "key", "token", "password")
    for section, values in settings.as_dict().items():
        print(f"[{section}]")
        for key, value in values.items():
            shown = "(set)" if value and any(h in key for h in hidden) else repr(_without_password(value))
            print(f"  {key} = {shown}")
    mode = "embedded" if settings.embedded_mongo else "production"
    print(f"mode: {mode}")
    return 0


def demo_log_level(settings: Settings, verbose: bool) -> str:
    """``serve --demo``'s log level: warnings and errors only, unless asked for the full log.

    ``verbose`` (``--verbose``) or ``WXB_LOG_VERBOSE=1`` keeps the configured level; so
    does a level other than the default INFO (someone asking for DEBUG wants it).
    """
    settings.log.verbose = settings.log.verbose or verbose
    if not settings.log.verbose and settings.log.level.upper() == "INFO":
        return "WARNING"
    return settings.log.level


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    if args.host:
        settings.http.host = args.host
    if args.port:
        settings.http.port = args.port
    if args.demo:
        # The demo's worker subprocess gets the server's settings, so the level too: the
        # start-up summary stays the last thing on the screen.
        level = demo_log_level(settings, args.verbose)
        if level != settings.log.level:
            settings.log.level = level
            configure_logging(level, settings.log.format)
    from wxbackend.server import serve
    from wxbackend.services import installed

    prepare = None
    if args.demo:
        from wxbackend.demo import serve as demo_serve

        prepare = demo_serve.prepare
    asyncio.run(serve(settings, installed.registry(settings), prepare=prepare))
    return 0


def cmd_seed(settings: Settings, args: argparse.Namespace) -> int:
    from wxbackend.demo import seed
    from wxbackend.runtime import open_runtime
    from wxbackend.services import installed

    async def run() -> None:
        async with open_runtime(settings, installed.registry(settings)) as rt:
            report = await seed.seed_city(rt.ctx, args.scale)
            print(report.summary())
    asyncio.run(run())
    return 0


def cmd_import_members(settings: Settings, args: argparse.Namespace) -> int:
    from wxbackend.runtime import open_runtime
    from wxbackend.services import installed
    from wxbackend.services.accounts.access import Actor
    from wxbackend.services.orgs import importer

    async def run() -> int:
        async with open_runtime(settings, installed.registry(settings)) as rt:
            result = await importer.import_path(rt.ctx, Actor.system_actor("import-members"),
                                                args.file, default_org_code=args.org_code)
            print(result.summary())
            return 0 if result.ok else 1
    return asyncio.run(run())


def cmd_create_admin(settings: Settings, args: argparse.Namespace) -> int:
    from models import orgs as orgs_model
    from wxbackend.runtime import open_runtime
    from wxbackend.services import installed
    from wxbackend.services.accounts import admins
    from wxbackend.services.accounts.access import Actor

    password = os.environ.get("WXB_ADMIN_PASSWORD") or getpass.getpass("password: ")

    async def run() -> int:
        async with open_runtime(settings, installed.registry(settings)) as rt:
            if args.org_code:
                org = await orgs_model.get_by_code(rt.ctx.db, args.org_code)
            else:
                roots = await orgs_model.roots(rt.ctx.db)
                org = roots[0] if roots else None
            if org is None:
                print("error: organisation not found (seed or import organisations first)", file=sys.stderr)
                return 1
            await admins.create_user(rt.ctx, Actor.system_actor("create-admin"), username=args.username,
                                     password=password, display_name=args.name or args.username,
                                     roles=[(args.role, org["_id"])])
            print(f"created {args.username} as {args.role} of {org['name']}")
            return 0
    return asyncio.run(run())


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "serve": cmd_serve,
    "seed": cmd_seed,
    "import-members": cmd_import_members,
    "create-admin": cmd_create_admin,
    "check-config": cmd_check_config,
    "sandbox": wechat_commands.cmd_sandbox,
    "wechat": wechat_commands.cmd_wechat,
    "worker": worker_command.cmd_worker,
}
