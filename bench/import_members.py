"""Time the import of a 10,000-row member spreadsheet, and of its re-import.

Run by hand (not in CI); starts its own embedded SecantusDB and Redis in a
temporary directory::

    .venv/bin/python bench/import_members.py [--rows 10000] [--keep FILE.xlsx]

It writes an .xlsx of valid members (real ID-card check digits, ID-card
numbers as text cells) for one branch and times three imports:

1. the file into an empty branch (every row created);
2. the same file again (matched by ID-card number: nothing created, every row
   found unchanged, nothing written);
3. the file with every phone number changed (every row updated).

After each it checks the counters (no duplicates) and prints the timings.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import secrets
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import openpyxl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models import ensure_indexes  # noqa: E402
from models import orgs as orgs_model  # noqa: E402
from wxbackend.context import AppContext  # noqa: E402
from wxbackend.embedded import EmbeddedServers  # noqa: E402
from wxbackend.idcard import make_id_card  # noqa: E402
from wxbackend.services import installed, orgs  # noqa: E402
from wxbackend.services.accounts.access import Actor  # noqa: E402
from wxbackend.services.orgs import importer  # noqa: E402
from wxbackend.services.orgs.import_sheet import COLUMNS  # noqa: E402
from wxbackend.settings import load_settings  # noqa: E402

SYSTEM = Actor.system_actor("bench")


def member_row(i: int, phone_prefix: str = "139") -> list[str]:
    birth = date(1950, 1, 1) + timedelta(days=i)  # one birthday each: distinct ID cards
    gender = "男" if i % 2 else "女"
    full = i % 5 != 0
    joined = birth + timedelta(days=25 * 365)
    return [f"党员{i:05d}", gender, "汉族", birth.isoformat(), "大学本科",
            make_id_card("350203", birth, i % 500, gender), f"{phone_prefix}{i:08d}",
            "正式党员" if full else "预备党员", joined.isoformat(),
            (joined + timedelta(days=365)).isoformat() if full else "", "在职", ""]


def spreadsheet(rows: int, phone_prefix: str = "139") -> bytes:
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("党员信息")
    sheet.append(list(COLUMNS.values()))
    for i in range(rows):
        sheet.append(member_row(i, phone_prefix))
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


async def bench(servers: EmbeddedServers, files: list[tuple[str, bytes]], rows: int) -> None:
    settings = load_settings(environ={
        "WXB_DATA_DIR": str(servers.data_dir),
        "WXB_MONGODB_URI": servers.mongodb_uri, "WXB_REDIS_URL": servers.redis_url,
        "WXB_SECURITY_SECRET_KEY": secrets.token_urlsafe(40),
        "WXB_SECURITY_FIELD_KEY": base64.b64encode(secrets.token_bytes(32)).decode()})
    ctx = await AppContext.connect(settings, servers.mongodb_uri, servers.redis_url, database="bench_import",
                                   registry=installed.registry(settings))
    try:
        await ctx.mongo.drop_database("bench_import")
        await ensure_indexes(ctx.db, ctx.registry.models)
        root = await orgs.create(ctx, SYSTEM, None, name="中共示范市委员会", org_type="committee",
                                 category="organ", code="ROOT")
        district = await orgs.create(ctx, SYSTEM, root["_id"], name="东区区委", org_type="committee",
                                     category="organ", code="DA")
        branch = await orgs.create(ctx, SYSTEM, district["_id"], name="东区第一党支部", org_type="branch",
                                   category="community", code="A1")
        expected_full = sum(1 for i in range(rows) if i % 5 != 0)
        for label, data in files:
            started = time.perf_counter()
            result = await importer.import_file(ctx, SYSTEM, data, "bench.xlsx", target_org_id=branch["_id"])
            elapsed = time.perf_counter() - started
            assert result.ok, result.summary()[:2000]
            stored = await orgs_model.get(ctx.db, branch["_id"])
            assert (stored["member_count"], stored["full_member_count"]) == (rows, expected_full), stored
            assert (await orgs_model.get(ctx.db, root["_id"]))["subtree_member_count"] == rows
            print(f"{label:<32} {elapsed:6.2f} s  ({rows / elapsed:,.0f} rows/s)  created {result.created}, "
                  f"updated {result.updated}, unchanged {result.unchanged}; branch counter {stored['member_count']}")
    finally:
        await ctx.mongo.drop_database("bench_import")
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
        asyncio.run(bench(servers, files, args.rows))


if __name__ == "__main__":
    main()
