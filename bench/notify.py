"""Benchmark: a notice to a 5,000-member subtree, delivered by two workers.

Run by hand (not in CI)::

    .venv/bin/python bench/notify.py [--members 5000] [--rate 100] [--workers 2]

It starts its own embedded SecantusDB and Redis (``bench/_common.py``), the
WeChat sandbox as a subprocess (``python -m wxbackend sandbox``) and two
``python -m wxbackend worker`` subprocesses, all with the same settings, and
builds a committee with 100 branches of 50 members each who follow the
official account (the sandbox knows them as followers). Then it sends one
notice to the committee's subtree through the real service
(``notices.send``: a worker fans it out, the workers deliver) and measures:

- enqueue: from ``send`` until every outbox document exists and every
  delivery job is queued (the notice leaves its ``fanout`` state);
- delivery: the rate of ``sent`` over time (from the outbox's ``sent_at``)
  against ``[notify] oa_template_rate``;
- exactly once: the sandbox's outbox holds one template message per member.

Targets (the issue): enqueue under 5 s; delivery within 5% of the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import add_server_args, bench_env  # noqa: E402
from models import ensure_indexes  # noqa: E402
from models import members as members_model  # noqa: E402
from models import notices as notices_model  # noqa: E402
from models import orgs as orgs_model  # noqa: E402
from wxbackend.embedded import free_port  # noqa: E402
from wxbackend.idcard import make_id_card  # noqa: E402
from wxbackend.services import orgs  # noqa: E402
from wxbackend.services.accounts.access import Actor  # noqa: E402
from wxbackend.services.notify import notices  # noqa: E402
from wxbackend.services.orgs import members  # noqa: E402

SYSTEM = Actor.system_actor("bench")
PER_BRANCH = 50


def wechat_env(sandbox_port: int, rate: float) -> dict[str, str]:
    return {
        "WXB_WECHAT_OA_APPID": "wxbenchoa" + secrets.token_hex(4),
        "WXB_WECHAT_OA_SECRET": secrets.token_hex(16),
        "WXB_WECHAT_OA_TOKEN": secrets.token_hex(8),
        "WXB_WECHAT_OA_AES_KEY": base64.b64encode(secrets.token_bytes(32)).decode()[:43],
        "WXB_WECHAT_MP_APPID": "wxbenchmp" + secrets.token_hex(4),
        "WXB_WECHAT_MP_SECRET": secrets.token_hex(16),
        "WXB_WECHAT_API_BASE": f"http://127.0.0.1:{sandbox_port}",
        "WXB_NOTIFY_NOTICE_OA_TEMPLATE_ID": "TPL_BENCH_NOTICE",
        "WXB_NOTIFY_OA_TEMPLATE_RATE": str(rate),
        "WXB_LOG_LEVEL": "WARNING", "WXB_LOG_FORMAT": "text",
    }


async def build_subtree(ctx, n_members: int) -> dict:
    """A committee with branches of 50 followers each (members inserted in bulk)."""
    committee = await orgs.create(ctx, SYSTEM, None, name="中共基准测试委员会", org_type="committee",
                                  category="organ", code="BENCH")
    n_branches = -(-n_members // PER_BRANCH)
    branches = [await orgs.create(ctx, SYSTEM, committee["_id"], name=f"基准第{i + 1:03d}党支部",
                                  org_type="branch", category="organ", code=f"BENCH-{i + 1:03d}")
                for i in range(n_branches)]
    made = 0
    for branch in branches:
        docs = []
        for _ in range(min(PER_BRANCH, n_members - made)):
            docs.append(_member(ctx, made, branch))
            made += 1
        await members_model.insert_many(ctx.db, docs)
        await orgs_model.adjust_member_counts(ctx.db, branch["_id"], branch["org_ancestors"],
                                              len(docs), len(docs))
    return committee


def _member(ctx, i: int, branch: dict) -> dict:
    birth = date(1950, 1, 1) + timedelta(days=i)
    gender = "男" if i % 2 else "女"
    clean, errors = members.validate_fields({
        "name": f"党员{i:05d}", "gender": gender, "birth_date": birth.isoformat(),
        "id_card": make_id_card("350203", birth, i % 500, gender), "phone": f"139{i:08d}",
        "party_status": "正式党员", "joined_on": (birth + timedelta(days=9200)).isoformat(),
        "full_on": (birth + timedelta(days=9600)).isoformat(), "category": "在职"}, today=ctx.clock.today())
    assert not errors, errors
    doc = members.new_document(ctx, clean, branch)
    doc.update(oa_openid=f"oBench{i:06d}", oa_following=True)
    return doc


async def teach_sandbox(url: str, n: int) -> None:
    """The sandbox learns the members as followers (WeChat knows its followers)."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        gate = asyncio.Semaphore(20)

        async def one(i: int) -> None:
            async with gate:
                answer = await http.post(f"/sandbox/users/oBench{i:06d}", json={"following": True})
                answer.raise_for_status()
        await asyncio.gather(*(one(i) for i in range(n)))


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "wxbackend", *command], env=env, cwd=ROOT,
                                stdout=out, stderr=out, stdin=subprocess.DEVNULL)


def wait_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


async def measure(ctx, committee: dict, n: int, rate: float) -> dict:
    t0 = time.monotonic()
    notice = await notices.send(ctx, SYSTEM, committee["_id"], "members", "基准测试通知",
                                "这是一条基准测试通知。")
    while (doc := await notices_model.get(ctx.db, notice["_id"]))["state"] != "sent":
        await asyncio.sleep(0.02)
    enqueued = time.monotonic() - t0
    # The workers write the recipients' outbox documents as they deliver (notify.plan).
    deadline = time.monotonic() + 3 * n / rate + 120
    while True:
        counts = (await notices_model.get(ctx.db, notice["_id"]))["counts"]
        if counts["recipients"] >= n and counts["delivered"] + counts["failed"] + counts["inbox"] >= n:
            break
        if time.monotonic() > deadline:
            print(f"gave up waiting: {counts}", flush=True)
            break
        await asyncio.sleep(0.2)
    doc = await notices_model.get(ctx.db, notice["_id"])
    recipients = doc["counts"]["recipients"]
    delivered = time.monotonic() - t0
    sent = await ctx.db["notifications"].find({"notice_id": notice["_id"], "status": "sent"},
                                              {"sent_at": 1}).to_list()
    times = sorted(d["sent_at"].timestamp() for d in sent)
    span = times[-1] - times[0]
    # Past the first second (the bucket's burst), the rate the limiter holds.
    steady = [t for t in times if t >= times[0] + 1.0]
    steady_rate = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 1 else 0.0
    return {"members": n, "recipients": recipients, "failed": doc["counts"]["failed"],
            "enqueue_seconds": round(enqueued, 2), "delivery_seconds": round(delivered, 2),
            "first_to_last_sent_seconds": round(span, 2),
            "overall_rate_per_s": round((len(times) - 1) / span, 1) if span else None,
            "steady_rate_per_s": round(steady_rate, 1), "configured_rate_per_s": rate,
            "steady_rate_vs_configured": f"{(steady_rate / rate - 1) * 100:+.1f}%"}


async def main(args: argparse.Namespace) -> None:
    with bench_env(args) as env:
        sandbox_port = free_port()
        extra = wechat_env(sandbox_port, args.rate)
        os.environ.update(extra)  # this process builds its settings from the environment too
        full_env = {**os.environ, **env.environ, **extra}
        logs = env.data_dir / "log"
        logs.mkdir(exist_ok=True)
        sandbox = start(["sandbox", "--port", str(sandbox_port), "--mode", "plain",
                         "--callback", "http://127.0.0.1:9/none"], full_env, logs / "sandbox.log")
        workers: list[subprocess.Popen] = []
        ctx = await env.connect(database=env.database)
        try:
            wait_port(sandbox_port)
            await ensure_indexes(ctx.db, ctx.registry.models)
            t = time.monotonic()
            committee = await build_subtree(ctx, args.members)
            await teach_sandbox(f"http://127.0.0.1:{sandbox_port}", args.members)
            print(f"setup: {args.members} following members in "
                  f"{-(-args.members // PER_BRANCH)} branches ({time.monotonic() - t:.1f}s)", flush=True)
            workers = [start(["worker"], full_env, logs / f"worker-{i}.log") for i in range(args.workers)]
            await asyncio.sleep(3)  # the workers connect
            result = await measure(ctx, committee, args.members, args.rate)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sandbox_port}", timeout=60) as http:
                outbox = (await http.get("/sandbox/outbox", params={"kind": "template"})).json()["messages"]
            per_member = Counter(m["openid"] for m in outbox)
            result["sandbox_messages"] = len(outbox)
            result["members_with_exactly_one"] = sum(1 for n in per_member.values() if n == 1)
            result["duplicates"] = sum(n - 1 for n in per_member.values() if n > 1)
            result["missing"] = args.members - len(per_member)
            result["workers"] = args.workers
            print(json.dumps(result, ensure_ascii=False, indent=2))
        finally:
            for proc in [*workers, sandbox]:
                proc.send_signal(signal.SIGTERM)
            for proc in [*workers, sandbox]:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            await ctx.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=100.0, help="[notify] oa_template_rate for the run")
    parser.add_argument("--workers", type=int, default=2)
    add_server_args(parser)
    asyncio.run(main(parser.parse_args()))
