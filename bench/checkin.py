"""Benchmark: 1,000 members check in to one meeting through the API, 100 at a time.

    .venv/bin/python bench/checkin.py                       # 1,000 members, 100 connections
    .venv/bin/python bench/checkin.py --members 1200 --concurrency 200

Builds one branch of ``--members`` members bound in the mini-program (written
directly, faster than a full seed), a meeting under way that expects all of
them, and one mini-program session each; starts the real server as a
subprocess (``python -m wxbackend serve``) on the same database; then

1. every member checks in once (``POST /api/v1/meetings/{id}/checkin``, the
   mini-program code), ``--concurrency`` connections at a time;
2. every member scans again (a new scan, a new nonce): each must be answered
   ``already_checked_in``.

After each round it reads the meeting back: exactly one mark per member (the
``attendance`` documents), ``counts.present`` equal to the members, no error answers. Reports total
time, throughput and p50/p99 latency. Target: p99 under 150 ms (issue #19, also with
``--members 5000 --concurrency 200 --servers 2``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from bench._common import (
    add_server_args,
    bench_env,
    cpu_seconds,
    percentile,
    start_server,
    stop_server,
)
from models import ensure_indexes
from models import meetings as meetings_model
from models import members as members_model
from wxbackend.context import AppContext
from wxbackend.idcard import make_id_card
from wxbackend.services import orgs
from wxbackend.services.accounts import mpsessions
from wxbackend.services.accounts.access import Actor
from wxbackend.services.meetings.checkin_codes import mp_scene
from wxbackend.services.orgs import members

SYSTEM = Actor.system_actor("bench")
SHANGHAI = ZoneInfo("Asia/Shanghai")


async def build(ctx: AppContext, n: int) -> tuple[dict[str, Any], list[str]]:
    """A branch of ``n`` bound members, a meeting under way, and one bearer token each."""
    stamp = datetime.now(UTC).strftime("%H%M%S")
    root = await orgs.create(ctx, SYSTEM, None, name=f"压测市委{stamp}", org_type="committee",
                             category="organ", code=f"BENCH{stamp}")
    branch = await orgs.create(ctx, SYSTEM, root["_id"], name="压测大支部", org_type="branch",
                               category="soe", code=f"BENCH{stamp}-1")
    docs = []
    for i in range(n):
        birth = date(1960, 1, 1) + timedelta(days=i // 500)
        clean, errors = members.validate_fields({
            "name": f"党员{i:04d}", "id_card": make_id_card("350203", birth, i % 500, "男"),
            "gender": "男", "birth_date": birth.isoformat(), "ethnicity": "汉族", "education": "大学本科",
            "phone": f"139{i:08d}", "party_status": "正式党员", "joined_on": "2000-07-01",
            "full_on": "2001-07-01", "category": "在职"}, today=ctx.clock.today())
        assert not errors, errors
        doc = members.new_document(ctx, clean, branch)
        doc["mp_openid"] = f"oBench{stamp}{i:05d}"
        docs.append(doc)
    for start in range(0, n, 500):
        await members_model.insert_many(ctx.db, docs[start:start + 500])
    now = ctx.clock.now().replace(microsecond=0)
    meeting = meetings_model.new_meeting(
        branch, "branch_assembly", "压测支部党员大会", now - timedelta(minutes=10), now + timedelta(hours=3),
        {"user_id": None, "name": "压测"}, SHANGHAI, now=now, status="planned", published_at=now,
        expected=[d["_id"] for d in docs], expected_count=n)
    await meetings_model.insert(ctx.db, meeting)
    tokens = [await mpsessions.open_session(ctx, openid=d["mp_openid"], unionid=None, session_key="k",
                                            member_id=d["_id"]) for d in docs]
    return meeting, tokens


class Connection:
    """One keep-alive HTTP/1.1 connection (httpx's pool costs more CPU than the server at 100)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post_json(self, path: str, body: dict[str, Any], token: str) -> tuple[int, dict[str, Any]]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        data = json.dumps(body).encode()
        self.writer.write((f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                           f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                           f"Content-Length: {len(data)}\r\n\r\n").encode() + data)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = next(int(v) for k, _, v in (line.partition(":") for line in lines[1:])
                      if k.lower() == "content-length")
        return status, json.loads(await self.reader.readexactly(length))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def round_of_scans(bases: list[str], meeting_id: str, tokens: list[str], concurrency: int,
                         scene: str,
                         label: str) -> dict[str, Any]:
    """Each token scans once over ``concurrency`` keep-alive connections; each request timed.

    With several servers (``bases``) the connections are spread over them, as
    nginx would spread them over several ``serve`` processes.
    """
    addresses = [(b.removeprefix("http://").split(":")[0], int(b.rsplit(":", 1)[1])) for b in bases]
    work: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    for item in enumerate(tokens):
        work.put_nowait(item)
    latencies: list[float] = []
    codes: dict[str, int] = {}
    path = f"/api/v1/meetings/{meeting_id}/checkin"

    async def client(n: int) -> None:
        host, port = addresses[n % len(addresses)]
        connection = Connection(host, port)
        try:
            while not work.empty():
                i, token = work.get_nowait()
                started = time.perf_counter()
                try:
                    status, answer = await connection.post_json(
                        path, {"scene": scene, "nonce": f"{label}-{i}"}, token)
                    code = answer.get("code") if status == 200 else f"http_{status}"
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    code, connection = type(exc).__name__, Connection(host, port)
                latencies.append((time.perf_counter() - started) * 1000)
                codes[code] = codes.get(code, 0) + 1
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(concurrency)))
    total = time.perf_counter() - started
    return {"total_s": total, "rate": len(tokens) / total, "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99), "max": max(latencies), "codes": codes}


async def measured(call: Any, pids: dict[str, int | None]) -> dict[str, Any]:
    """Run ``call`` and add the CPU milliseconds each process spent per request."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    figures = await call
    figures["cpu"] = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    return figures


async def verify(ctx: AppContext, meeting_id: Any) -> tuple[int, int]:
    """(present marks, counts.present) as stored: the marks are documents of their own, the
    counts the meeting's with their running increments."""
    doc = await meetings_model.get(ctx.db, meeting_id, {"attendance": 1, "counts": 1})
    marks = sum(1 for m in doc["attendance"].values() if m["status"] == "present")
    return marks, doc["counts"]["present"]


def report(label: str, figures: dict[str, Any], marks: int, present: int) -> None:
    print(f"\n{label}")
    print(f"  total {figures['total_s']:.2f} s   {figures['rate']:.0f} check-ins/s   "
          f"p50 {figures['p50']:.1f} ms   p99 {figures['p99']:.1f} ms   max {figures['max']:.1f} ms")
    print(f"  answers {figures['codes']}")
    n = sum(figures["codes"].values())
    print("  CPU per check-in: " + ", ".join(f"{name} {seconds * 1000 / n:.2f} ms"
                                              for name, seconds in figures["cpu"].items()))
    print(f"  in the database: {marks} marks, counts.present = {present}")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_server_args(parser)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100, help="connections, each one request at a time")
    parser.add_argument("--servers", type=int, default=1, help="server processes sharing the connections")
    args = parser.parse_args()
    with bench_env(args) as env:
        ctx = await env.connect(database=args.database)
        await ensure_indexes(ctx.db, ctx.registry.models)
        started = time.perf_counter()
        meeting, tokens = await build(ctx, args.members)
        print(f"built {args.members} members, their sessions and the meeting in "
              f"{time.perf_counter() - started:.1f} s")
        # One address sends every request here; the per-IP limit is for the Internet.
        quiet = {**env.environ, "WXB_LOG_LEVEL": "WARNING", "WXB_API_RATE_PER_IP_PER_MINUTE": "1000000",
                 "WXB_API_RATE_PER_USER_PER_MINUTE": "1000"}
        servers = [start_server(quiet, env.data_dir / f"bench-checkin-server-{i}.log")
                   for i in range(args.servers)]
        bases = [base for _, base in servers]
        ok = True
        try:
            pids = {"server": servers[0][0].pid, "database": env.mongo_pid(), "redis": env.redis_pid(),
                    "load client": os.getpid()}
            first = await measured(round_of_scans(bases, str(meeting["_id"]), tokens, args.concurrency,
                                                   mp_scene(meeting),
                                                  "first"), pids)
            marks, present = await verify(ctx, meeting["_id"])
            report(f"{args.members} members check in, {args.concurrency} connections, "
                   f"{args.servers} server process(es)", first, marks, present)
            ok &= first["codes"] == {"checked_in": args.members} and marks == present == args.members
            again = await measured(round_of_scans(bases, str(meeting["_id"]), tokens, args.concurrency,
                                                   mp_scene(meeting),
                                                  "again"), pids)
            marks, present = await verify(ctx, meeting["_id"])
            report(f"the same {args.members} scan again", again, marks, present)
            ok &= again["codes"] == {"already_checked_in": args.members} and marks == present == args.members
        finally:
            for proc, _ in servers:
                stop_server(proc)
            await ctx.close()
        target = "p99 under 150 ms: " + ("met" if first["p99"] < 150 else "NOT met")
        print(f"\n{'OK' if ok else 'FAILED'}: exactly {args.members} check-ins, "
              f"{'no' if ok else 'some'} errors; {target}")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
