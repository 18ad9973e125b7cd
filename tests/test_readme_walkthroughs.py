"""The README's walkthroughs, run as written against ``python -m wxbackend serve --demo``.

One demo server (what ``make run`` starts: a small demo city, the sandbox, a
worker) runs for this module, on the suite's SecantusDB (its own database) and
Redis (its own database number). Its console must end with the summary the
README shows; the two lines it prints for the walkthroughs (``S=`` and ``API=``)
go into the environment, and every ``sh`` block under the README's
"Walkthroughs" heading runs with bash and the real curl, the server's port in
place of 127.0.0.1:8000. A README command that stops working fails here::

    sections = walkthrough_blocks(README.read_text())   # {"A member on ...": ["curl ..."]}
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pymongo
import pytest
import redis

from tests.conftest import make_settings, suite_start
from tests.webclient import WebClient
from tests.wechat_fixtures import use_test_credentials
from wxbackend.clock import Clock
from wxbackend.demo import seed
from wxbackend.embedded import EmbeddedServers, free_port
from wxbackend.services.orgs import binding
from wxbackend.worker import settings_environ

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SCALE = "0.002"  # 32 organisations, ~440 members: seeded in a few seconds
REDIS_DB = 9  # the suite's tests use database 0 and flush it
RULE = "─" * 72
OA = "A member on the official account (through the sandbox)"
MINI = "The mini-program API (curl)"


# -- the README --------------------------------------------------------------------------------

def walkthrough_blocks(text: str) -> dict[str, list[str]]:
    """The ``sh`` blocks of each ``###`` section under ``## Walkthroughs``, in order."""
    part = text.split("\n## Walkthroughs\n", 1)[1].split("\n## ", 1)[0]
    sections: dict[str, list[str]] = {}
    for chunk in re.split(r"^### ", part, flags=re.M)[1:]:
        heading, body = chunk.split("\n", 1)
        sections[heading.strip()] = re.findall(r"^```sh\n(.*?)^```", body, flags=re.M | re.S)
    return sections


def json_documents(text: str) -> tuple[list[Any], str]:
    """The JSON documents printed one after another, and what follows them."""
    decoder, docs, at = json.JSONDecoder(), [], 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        try:
            doc, at = decoder.raw_decode(text, at)
        except ValueError:
            return docs, text[at:]
        docs.append(doc)


# -- the demo server ---------------------------------------------------------------------------

@dataclass
class DemoServer:
    port: int
    proc: subprocess.Popen
    stderr_path: Path
    database: str
    mongodb_uri: str
    stdout: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def printed(self, name: str) -> str:
        """The value of the summary's ``NAME=value`` line."""
        lines = [line for line in self.stdout if line.startswith(f"{name}=")]
        assert len(lines) == 1, f"the summary should print one {name}= line:\n" + "\n".join(self.stdout)
        return lines[0].split("=", 1)[1]

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def notifications(self) -> list[dict[str, Any]]:
        with pymongo.MongoClient(self.mongodb_uri) as client:
            return client[self.database]["notifications"].find(
                {"status": {"$gte": ""}}, {"status": 1, "errcode": 1, "errmsg": 1}).to_list()

    def members_named(self, name: str) -> list[dict[str, Any]]:
        with pymongo.MongoClient(self.mongodb_uri) as client:
            return client[self.database]["members"].find(
                {"name": name}, {"oa_openid": 1, "mp_openid": 1}).to_list()


def _environment(servers: EmbeddedServers, data: Path, database: str, port: int) -> dict[str, str]:
    settings = make_settings(servers, data)
    use_test_credentials(settings)
    start = suite_start()
    offset = Clock.starting_at(start).offset.total_seconds() if start else 0.0
    return {**os.environ, **settings_environ(settings), "WXB_MONGODB_DATABASE": database,
            "WXB_REDIS_URL": servers.redis_url.rsplit("/", 1)[0] + f"/{REDIS_DB}",
            "WXB_HTTP_HOST": "127.0.0.1", "WXB_HTTP_PORT": str(port), "WXB_SEED_DEMO_SCALE": SCALE,
            "WXB_LOG_FORMAT": "text", "WXB_CLOCK_OFFSET_SECONDS": repr(offset)}


@pytest.fixture(scope="module")
def demo(servers: EmbeddedServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    data = tmp_path_factory.mktemp("readme-demo")
    database, port = f"readme_{uuid.uuid4().hex[:10]}", free_port()
    env = _environment(servers, data, database, port)
    cache = redis.Redis.from_url(env["WXB_REDIS_URL"])
    cache.flushdb()
    stderr_path = data / "stderr.txt"
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "wxbackend", "serve", "--demo"], cwd=ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                text=True, encoding="utf-8")
    server = DemoServer(port, proc, stderr_path, database, servers.mongodb_uri)
    summary = threading.Event()

    def read() -> None:  # the whole console, while the module's tests run
        assert proc.stdout is not None
        for line in proc.stdout:
            server.stdout.append(line.rstrip("\n"))
            if line.rstrip("\n") == RULE and any(x.startswith("API=") for x in server.stdout):
                summary.set()
        summary.set()  # the server ended

    threading.Thread(target=read, daemon=True).start()
    try:
        assert summary.wait(180) and proc.poll() is None, (
            "the demo server did not start:\n" + "\n".join(server.stdout) + "\n" + server.stderr())
        yield server
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: server, worker and sandbox stop
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with pymongo.MongoClient(servers.mongodb_uri) as client:
            client.drop_database(database)
        cache.flushdb()
        cache.close()


def run_section(demo: DemoServer, heading: str) -> subprocess.CompletedProcess[str]:
    """The section's ``sh`` blocks, in one bash (``set -e``), with S and API as printed."""
    blocks = walkthrough_blocks(README.read_text(encoding="utf-8")).get(heading)
    assert blocks, f"README: no sh block under ### {heading}"
    script = "\n".join(blocks).replace("127.0.0.1:8000", f"127.0.0.1:{demo.port}")
    env = {**os.environ, "S": demo.printed("S"), "API": demo.printed("API")}
    done = subprocess.run(["bash", "-e", "-c", script], env=env, capture_output=True, text=True,
                          encoding="utf-8", timeout=120, check=False)
    assert done.returncode == 0, f"{heading}: bash exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert not done.stderr.strip(), f"{heading}: errors on stderr:\n{done.stderr}"
    return done


def wait_until_delivered(demo: DemoServer, timeout: float = 60.0) -> list[dict[str, Any]]:
    """The demo's notifications once its worker has settled every one."""
    deadline = time.monotonic() + timeout
    while True:
        found = demo.notifications()
        if found and not any(n["status"] == "queued" for n in found):
            return found
        assert time.monotonic() < deadline, f"notifications still queued: {found[:5]}"
        time.sleep(0.2)


# -- the tests ---------------------------------------------------------------------------------

def test_make_run_ends_with_the_summary_and_keeps_quiet(demo):
    wait_until_delivered(demo)  # the worker has done the start-up sends meanwhile
    time.sleep(1.0)
    out = [line for line in demo.stdout if line.strip()]
    # The summary is the last thing printed, after the start-up work.
    top = len(out) - 1 - out[::-1].index(RULE, 1)
    summary = out[top:]
    assert out[-1] == RULE and summary[1] == "党建e家 演示环境已启动", "\n".join(out)
    assert any(line.startswith("worker: pid") for line in out[:top])
    assert any(line.startswith("demo notifications:") for line in out[:top])
    assert f"管理后台：{demo.url}/admin/" in summary
    assert any("demo-city-2026" in line for line in summary)
    accounts = {line.split()[-1]: line.split()[:-1] for line in summary if line.startswith("  ")}
    assert accounts["市级管理员"] == ["city"] and "d01" in accounts["党委管理员"]
    assert "sec-d01-b0001" in accounts["支部书记"] and accounts["审计员（只读）"] == ["auditor"]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", demo.printed("S"))
    assert f"微信沙箱：{demo.printed('S')}/sandbox（说明见 docs/WECHAT-SANDBOX.md）" in summary
    assert demo.printed("API") == f"{demo.url}/api/v1"
    # The README's intro shows the same two lines to paste.
    readme = README.read_text(encoding="utf-8")
    assert "\nS=http://127.0.0.1:PORT " in readme and "\nAPI=http://127.0.0.1:8000/api/v1 " in readme
    # Quiet: no INFO lines of the server, the worker or the access log; no index-by-index seeding.
    console = demo.stderr()
    assert not re.search(r" (INFO|DEBUG) ", console), console
    assert "seed: index" not in console and "seed: scale 0.002" in console


async def test_the_demo_outbox_is_healthy_and_has_a_favicon(demo):
    rows = wait_until_delivered(demo)
    assert [r for r in rows if r["status"] == "failed"] == []
    assert sum(r["status"] == "sent" for r in rows) >= 2  # the notice's followers, the digest
    # The README's example member is left for the walkthroughs to bind.
    [example] = demo.members_named("演示党员")
    assert "oa_openid" not in example
    web = WebClient(demo.url)
    try:
        await web.login("sec-d01-b0001", seed.DEMO_PASSWORD)
        page = await web.get("/admin/outbox?status=failed")
        assert page.status_code == 200 and "没有符合条件的消息" in page.text
        assert "40003" not in page.text and "invalid openid" not in page.text
        sent = await web.get("/admin/outbox?status=sent")
        assert "已送达</td>" in sent.text
        assert re.search(r'<link rel="icon" href="/static/favicon\.ico\?v=\w+"', page.text)
    finally:
        await web.close()
    async with httpx.AsyncClient(base_url=demo.url) as http:
        icon = await http.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/vnd.microsoft.icon"
    assert icon.content[:4] == b"\x00\x00\x01\x00"  # an ICO file


def test_the_official_account_walkthrough_runs_as_written(demo):
    done = run_section(demo, OA)
    *actions, outbox = json_documents(done.stdout)[0]
    assert len(actions) == 3, done.stdout
    for result in actions:
        assert result["status"] == 200 and result["error"] is None and result["reply"], result
    welcome, help_text, branch = (r["reply"]["Content"] for r in actions)
    assert "欢迎关注党建e家" in welcome and f"{demo.url}/wechat/oa/bind" in welcome
    assert "您可以发送以下关键词" in help_text and "绑定党员身份" in branch
    # The outbox shows what the user received: here the three replies in the chat.
    received = [(m["kind"], m["body"]["Content"]) for m in outbox["messages"]]
    assert received == [("reply", welcome), ("reply", help_text), ("reply", branch)]


async def test_binding_as_the_readme_tells_then_my_branch_names_the_branch(demo):
    """The prose after the official-account block: open the link, be oDemo1, fill the form."""
    example = seed.API_EXAMPLE_MEMBER
    readme = README.read_text(encoding="utf-8")
    prose = " ".join(readme.split(f"### {OA}", 1)[1].split("\n### ", 1)[0].split())
    assert "enter `oDemo1`" in prose
    assert f"`{example['name']}` / `{example['id_card']}` / `{example['phone']}`" in prose
    sandbox = demo.printed("S")
    browser = WebClient(demo.url)
    try:
        async with httpx.AsyncClient(base_url=sandbox) as wechat:
            if not (await wechat.get("/sandbox/users/oDemo1")).is_success:
                (await wechat.post("/sandbox/users/oDemo1/subscribe")).raise_for_status()
            start = await browser.get("/wechat/oa/bind")
            authorize = start.headers["location"].partition("#")[0]
            assert authorize.startswith(f"{sandbox}/connect/oauth2/authorize?")
            back = await wechat.get(f"{authorize}&sandbox_openid=oDemo1")  # the user chose oDemo1
            target = urlsplit(back.headers["location"])
            returned = await browser.get(f"{target.path}?{target.query}")
            assert returned.headers["location"] == "/wechat/oa/bind"
            done = await browser.post_form("/wechat/oa/bind", {
                "name": example["name"], "id_card": example["id_card"], "phone": example["phone"]})
            assert done.status_code == 200 and example["name"] in done.text, done.text
            # Other server processes learn of a bind within binding.IDENTITY_RECHECK (1 s);
            # a person reading the page takes longer than that before tapping the menu.
            await asyncio.sleep(binding.IDENTITY_RECHECK + 0.2)
            clicked = (await wechat.post("/sandbox/users/oDemo1/click", json={"key": "MY_BRANCH"})).json()
    finally:
        await browser.close()
    assert clicked["error"] is None and "所在党组织：" in clicked["reply"]["Content"], clicked
    [member] = demo.members_named(example["name"])
    assert member["oa_openid"] == "oDemo1"


def test_the_mini_program_walkthrough_runs_as_written(demo):
    done = run_section(demo, MINI)
    docs, rest = json_documents(done.stdout)
    assert not [d for d in docs if "error" in d], done.stdout
    bound, me, branch = docs[:3]
    assert bound["name"] == me["name"] == "演示党员"
    assert me["bindings"]["mini_program"] is True and me["branch"]["id"] == branch["id"]
    assert "演示党员" in [m["name"] for m in branch["members"]["items"]]
    assert '"openapi": "3.0.3"' in rest  # the head of the OpenAPI document


def test_the_walkthrough_headings_the_suite_runs_are_in_the_readme():
    blocks = walkthrough_blocks(README.read_text(encoding="utf-8"))
    assert OA in blocks and MINI in blocks
    # Every sh block of the walkthroughs is run by a test above.
    assert {heading for heading, found in blocks.items() if found} == {OA, MINI}
