"""The WeChat CLI commands (``sandbox``, ``wechat menu push``) and the demo sandbox."""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid

import httpx

from tests.test_settings import run_cli
from wxbackend.settings import ROOT
from wxbackend.wechat.commands import cmd_wechat, load_menu
from wxbackend.wechat.sandbox import start_for_demo
from wxbackend.wechat.sandbox.oa import check_menu


def test_menu_file_meets_wechat_rules(settings):
    menu = load_menu(ROOT / "config" / "menu.json", settings)
    check_menu(menu)  # raises ApiError with WeChat's errcode otherwise
    text = json.dumps(menu, ensure_ascii=False)
    assert "_doc" not in text and "{public_url}" not in text
    assert f"{settings.public_url}/wechat/oa/bind" in text


async def test_menu_push_publishes_the_menu_file(ctx, sandbox):
    settings = ctx.settings
    settings.mongodb.database = f"t_{uuid.uuid4().hex[:12]}"  # open_runtime builds indexes there
    args = argparse.Namespace(file=None, dry_run=False)
    try:
        # The command runs its own event loop, as under `python -m wxbackend`.
        assert await asyncio.to_thread(cmd_wechat, settings, args) == 0
    finally:
        await ctx.mongo.drop_database(settings.mongodb.database)
    published = (await sandbox.http.get("/sandbox/menu")).json()["menu"]
    assert published == load_menu(ROOT / settings.wechat.menu_file, settings)
    assert sandbox.calls("/cgi-bin/menu/create") == 1


def test_menu_push_refuses_a_broken_file(tmp_path):
    bad = tmp_path / "menu.json"
    bad.write_text("{not json")
    result = run_cli(tmp_path, "wechat", "menu", "push", "--file", str(bad), "--dry-run")
    assert result.returncode == 2
    assert "cannot read menu" in result.stderr


def test_sandbox_needs_credentials(tmp_path, servers):
    # Production mode (external MongoDB): no generated development secrets.
    result = run_cli(tmp_path, "sandbox", "--port", "1", WXB_MONGODB_URI=servers.mongodb_uri,
                     WXB_SECURITY_SECRET_KEY="x" * 40,
                     WXB_SECURITY_FIELD_KEY="MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
    assert result.returncode == 2
    assert "WXB_WECHAT_OA_APPID" in result.stderr


def test_wechat_commands_have_help(tmp_path):
    for command in (["sandbox"], ["wechat", "menu", "push"]):
        result = run_cli(tmp_path, *command, "--help")
        assert result.returncode == 0
        assert "usage: python -m wxbackend " + " ".join(command) in result.stdout


async def test_demo_sandbox_points_the_settings_at_itself(settings):
    from tests.wechat_fixtures import use_test_credentials

    use_test_credentials(settings)
    settings.http.host = "0.0.0.0"  # noqa: S104 (only the callback URL is derived from it)
    server = start_for_demo(settings)
    try:
        url = settings.wechat.api_base
        assert settings.wechat.oauth_base == settings.wechat.qrcode_image_base == url
        async with httpx.AsyncClient() as http:
            index = (await http.get(url + "/sandbox")).json()
        assert index["callback_url"] == f"http://127.0.0.1:{settings.http.port}/wechat/oa"
        assert index["mode"] == "safe" and index["oa_appid"] == settings.wechat.oa_appid
    finally:
        server.stop()
