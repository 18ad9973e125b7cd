"""Time the import of a 10,000-row member spreadsheet through the web and a worker.

Run by hand (not in CI); starts its own embedded SecantusDB and Redis in a
temporary directory, the management web in this process and one worker
(``python -m wxbackend worker``) beside it, as a deployment runs them::

    .venv/bin/python bench/import_members.py [--rows 10000] [--keep FILE.xlsx]

It writes an .xlsx of valid members (real ID-card check digits, ID-card
numbers as text cells) for one branch, logs in as the branch's secretary and
uploads, through ``POST /admin/orgs/<id>/import``:

1. the file into an empty branch (every row created);
2. the same file again (matched by ID-card number: nothing created, every row
   found unchanged, nothing written);
3. the file with every phone number changed (every row updated);
4. a 3-row file into another branch (how soon a small import shows its result).

For each it prints how long the upload took to answer (the redirect to the
progress page), how long the job took (its run's start to finish, as the
worker recorded them) and how long until the progress page said it was done;
after each it checks the counters (no duplicates).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import openpyxl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bson import ObjectId  # noqa: E402

from models import ensure_indexes  # noqa: E402
from models import orgs as orgs_model  # noqa: E402
from tests.webclient import WebClient  # noqa: E402
from wxbackend.app import make_app  # noqa: E402
from wxbackend.context import AppContext  # noqa: E402
from wxbackend.embedded import EmbeddedServers, free_port  # noqa: E402
from wxbackend.idcard import make_id_card  # noqa: E402
from wxbackend.services import installed, orgs  # noqa: E402
from wxbackend.services.accounts import admins  # noqa: E402
from wxbackend.services.accounts.access import Actor  # noqa: E402
from wxbackend.services.orgs.import_sheet import COLUMNS  # noqa: E402
from wxbackend.settings import load_settings  # noqa: E402
from wxbackend.worker import settings_environ  # noqa: E402

SYSTEM = Actor.system_actor("bench")
DATABASE = "bench_import"
PASSWORD = "bench-password-123"


def member_row(i: int, phone_prefix: str = "139") -> list[str]:
    birth = date(1950, 1, 1) + timedelta(days=i)  # one birthday each: distinct ID cards
    gender = "男" if i % 2 else "女"
    full = i % 5 != 0
    joined = birth + timedelta(days=25 * 365)
    return [f"党员{i:05d}", gender, "汉族", birth.isoformat(), "大学本科",
            make_id_card("350203", birth, i % 500, gender), f"{phone_prefix}{i:08d}",
            "正式党员" if full else "预备党员", joined.isoformat(),
            (joined + timedelta(days=365)).isoformat() if full else "", "在职", ""]


def spreadsheet(rows: int, phone_prefix: str = "139", first: int = 0) -> bytes:
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("党员信息")
    sheet.append(list(COLUMNS.values()))
    for i in range(first, first + rows):
        sheet.append(member_row(i, phone_prefix))
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


async def upload(web: WebClient, org_id: ObjectId, data: bytes) -> tuple[float, str]:
    url = f"/admin/orgs/{org_id}/import"
    fields = {"_xsrf": await web.xsrf()}
    started = time.perf_counter()
    answer = await web.request("POST", url, data=fields, files={"file": ("bench.xlsx", data)})
    elapsed = time.perf_counter() - started
    assert answer.status_code == 303, (answer.status_code, answer.text[:2000])
    return elapsed, answer.headers["location"]


async def until_done(web: WebClient, page: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = (await web.get(page + "/status")).json()
        if status["state"] in ("done", "failed"):
            return status
        assert time.monotonic() < deadline, f"not done after {timeout} s: {status}"
        await asyncio.sleep(0.05)


async def timed(ctx: AppContext, web: WebClient, org_id: ObjectId, label: str, data: bytes) -> dict:
    started = time.perf_counter()
    answer, page = await upload(web, org_id, data)
    status = await until_done(web, page)
    shown = time.perf_counter() - started
    run = await ctx.db.import_runs.find_one({"_id": ObjectId(page.rsplit("/", 1)[1])})
    assert status["state"] == "done", run.get("result")
    job = (run["finished_at"] - run["started_at"]).total_seconds()
    result = run["result"]
    print(f"{label:<34} upload answered {answer * 1000:6.0f} ms | job {job:6.2f} s "
          f"({result['rows'] / max(job, 1e-9):,.0f} rows/s) | done on the page after {shown:6.2f} s | "
          f"created {result['created']}, updated {result['updated']}, unchanged {result['unchanged']}")
    return result


async def bench(servers: EmbeddedServers, files: list[tuple[str, bytes]], rows: int, log_path: Path) -> None:
    environ = {
        "WXB_DATA_DIR": str(servers.data_dir), "WXB_MONGODB_URI": servers.mongodb_uri,
        "WXB_REDIS_URL": servers.redis_url, "WXB_MONGODB_DATABASE": DATABASE,
        "WXB_SECURITY_SECRET_KEY": secrets.token_urlsafe(40),
        "WXB_SECURITY_FIELD_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "WXB_LOG_FORMAT": "text"}
    settings = load_settings(environ=environ)
    ctx = await AppContext.connect(settings, servers.mongodb_uri, servers.redis_url, database=DATABASE,
                                   registry=installed.registry(settings))
    worker = None
    server = None
    web = None
    try:
        await ctx.mongo.drop_database(DATABASE)
        await ensure_indexes(ctx.db, ctx.registry.models)
        root = await orgs.create(ctx, SYSTEM, None, name="中共示范市委员会", org_type="committee",
                                 category="organ", code="ROOT")
        district = await orgs.create(ctx, SYSTEM, root["_id"], name="东区区委", org_type="committee",
                                     category="organ", code="DA")
        branch = await orgs.create(ctx, SYSTEM, district["_id"], name="东区第一党支部", org_type="branch",
                                   category="community", code="A1")
        small = await orgs.create(ctx, SYSTEM, district["_id"], name="东区第二党支部", org_type="branch",
                                  category="community", code="A2")
        await admins.create_user(ctx, SYSTEM, username="bench_east", password=PASSWORD, display_name="东区",
                                 roles=[("committee_admin", district["_id"])])
        with log_path.open("ab") as log:
            worker = subprocess.Popen([sys.executable, "-m", "wxbackend", "worker"], cwd=ROOT,
                                      env={**os.environ, **settings_environ(settings), **environ},
                                      stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        port = free_port()
        server = make_app(ctx).listen(port, "127.0.0.1", max_body_size=settings.http.max_body_bytes)
        web = WebClient(f"http://127.0.0.1:{port}")
        await web.login("bench_east", PASSWORD)
        while not await ctx.redis.exists(f"jobs:worker:{socket.gethostname()}:{worker.pid}"):
            assert worker.poll() is None, f"the worker exited, see {log_path}"
            await asyncio.sleep(0.1)
        expected_full = sum(1 for i in range(rows) if i % 5 != 0)
        for label, data in files:
            await timed(ctx, web, branch["_id"], label, data)
            stored = await orgs_model.get(ctx.db, branch["_id"])
            assert (stored["member_count"], stored["full_member_count"]) == (rows, expected_full), stored
            assert (await orgs_model.get(ctx.db, root["_id"]))["subtree_member_count"] == rows
        await timed(ctx, web, small["_id"], "3 rows into another branch", spreadsheet(3, first=rows))
    finally:
        if web is not None:
            await web.close()
        if server is not None:
            server.stop()
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        await ctx.mongo.drop_database(DATABASE)
        await ctx.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="also save the generated spreadsheet here")
    args = parser.parse_args()
    started = time.perf_counter()
    data = spreadsheet(args.rows)
    changed = spreadsheet(args.rows, phone_prefix="137")
    print(f"generated 2 x {args.rows} rows, {len(data) / 1024:,.0f} KiB each, "
          f"in {time.perf_counter() - started:.2f} s")
    if args.keep:
        args.keep.write_bytes(data)
    files = [("import (all new)", data), ("re-import, same file", data),
             ("re-import, every phone changed", changed)]
    with tempfile.TemporaryDirectory() as tmp, EmbeddedServers(Path(tmp)) as servers:
        asyncio.run(bench(servers, files, args.rows, Path(tmp) / "worker.log"))


if __name__ == "__main__":
    main()
