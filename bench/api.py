"""Benchmark of ``GET /api/v1/me`` against the callback benchmark's bare Tornado app.

    .venv/bin/python bench/api.py [--requests 8000] [--concurrency 64] [--rounds 3]

In one run on the same machine:

(a) the bare Tornado app of bench/callback.py (one process) answering ``success``;
(b) our server (``python -m wxbackend serve``, one process, embedded SecantusDB
    and Redis as subprocesses) answering ``GET /api/v1/me`` with a valid bearer
    token: 64 bound members, each request with one of their tokens.

The load client is this process (asyncio, keep-alive connections, request
bytes built before the clock starts). Rounds of (a) and (b) alternate so a
change in the machine's load hits both alike. Prints requests/s of both, the
ratio and the latency percentiles of (b). Target: p99 under 30 ms.
The per-user rate limit is raised for the run (64 users make thousands of
requests a minute each here; a phone makes a few).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import secrets
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from callback import BARE_APP, Account, load, percentile, server_env, start

from bench._common import bound_members, env_context, stop_server
from wxbackend.embedded import EmbeddedServers, free_port
from wxbackend.services.accounts import mpsessions


async def bound_tokens(env: dict[str, str], users: int) -> list[str]:
    """A mini-program bearer token for each of ``users`` bound members."""
    async with env_context(env) as ctx:
        return [await mpsessions.open_session(ctx, openid=openid, unionid=None, session_key="x",
                                              member_id=member["_id"])
                for openid, member in await bound_members(ctx, users, "mp", "oApi")]


def me_requests(port: int, tokens: list[str], count: int) -> list[bytes]:
    return [(f"GET /api/v1/me HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
             f"Authorization: Bearer {tokens[i % len(tokens)]}\r\n\r\n").encode() for i in range(count)]


def bare_requests(port: int, count: int) -> list[bytes]:
    request = (f"POST /wechat/oa HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               "Content-Length: 2\r\n\r\nok").encode()
    return [request] * count


async def run(args: argparse.Namespace) -> None:
    account = Account(appid="wxbench" + secrets.token_hex(5), token=secrets.token_hex(8),
                      aes_key=base64.b64encode(secrets.token_bytes(32)).decode()[:43])
    keys = {"secret": secrets.token_urlsafe(40), "field": base64.b64encode(secrets.token_bytes(32)).decode()}
    with tempfile.TemporaryDirectory(prefix="wxb-bench-api-") as tmp, EmbeddedServers(Path(tmp)) as servers:
        bare_port, app_port = free_port(), free_port()
        env = {**server_env(servers, Path(tmp), account, app_port, keys),
               "WXB_API_RATE_PER_USER_PER_MINUTE": "1000000", "WXB_API_RATE_PER_IP_PER_MINUTE": "1000000"}
        tokens = await bound_tokens(env, args.users)
        bare = start([sys.executable, "-c", BARE_APP, str(bare_port)], {}, "ready")
        app = start([sys.executable, "-m", "wxbackend", "serve"], env, "serving on")
        try:
            results: dict[str, list[tuple[float, list[float]]]] = {"a": [], "b": []}
            await load(bare_port, bare_requests(bare_port, 500), args.concurrency)   # warm-up
            await load(app_port, me_requests(app_port, tokens, 500), args.concurrency)
            for _ in range(args.rounds):
                seconds, lat, _ = await load(bare_port, bare_requests(bare_port, args.requests), args.concurrency)
                results["a"].append((seconds, lat))
                seconds, lat, sample = await load(app_port, me_requests(app_port, tokens, args.requests),
                                                  args.concurrency)
                results["b"].append((seconds, lat))
        finally:
            stop_server(bare)
            stop_server(app)
    report(args, results, sample)


def report(args: argparse.Namespace, results: dict, sample: bytes) -> None:
    rate = {k: statistics.median(args.requests / s for s, _ in v) for k, v in results.items()}
    latencies = [x for _, lat in results["b"] for x in lat]
    print(f"GET /api/v1/me, {args.concurrency} connections, {args.rounds} rounds of {args.requests}")
    print(f"(a) bare Tornado      {rate['a']:8.0f} req/s")
    print(f"(b) GET /api/v1/me    {rate['b']:8.0f} req/s   ratio (b)/(a) {rate['b'] / rate['a']:.2f}")
    print(f"(b) latency ms        p50 {percentile(latencies, 50):.1f}  p90 {percentile(latencies, 90):.1f}"
          f"  p99 {percentile(latencies, 99):.1f}  max {max(latencies):.1f}   (target p99 < 30)")
    print(f"sample answer: {sample[:120].decode(errors='replace')}...")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=8000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, default=64)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
