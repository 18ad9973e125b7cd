"""Shared helpers of the benchmarks: servers, settings, timing figures.

Each benchmark starts its own embedded SecantusDB and Redis under a data dir
(a temporary one unless ``--data-dir`` is given, which keeps a seeded city on
disk between runs), or uses servers given with ``--mongodb-uri``/``--redis-url``.
The field and session keys live in ``<data dir>/bench-keys.json`` (or come from
WXB_SECURITY_* in the environment), so a city seeded by one run is readable by
the next and by the server subprocess::

    with bench_env(args) as env:
        ctx = await env.connect()
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from wxbackend.context import AppContext
from wxbackend.embedded import EmbeddedServers, free_port
from wxbackend.services import installed
from wxbackend.settings import Settings, load_settings

DEFAULT_DATABASE = "wxbackend"


def add_server_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path,
                        help="keep the embedded servers' data here (default: a temporary dir, removed)")
    parser.add_argument("--mongodb-uri", help="use this (already running) MongoDB/SecantusDB")
    parser.add_argument("--redis-url", help="use this (already running) Redis")
    parser.add_argument("--database", default=DEFAULT_DATABASE, help="database name")


@dataclass
class BenchEnv:
    data_dir: Path
    mongodb_uri: str
    redis_url: str
    database: str
    keys: dict[str, str]
    servers: EmbeddedServers | None

    @property
    def environ(self) -> dict[str, str]:
        """What a server subprocess needs to use the same data and keys."""
        return {"WXB_DATA_DIR": str(self.data_dir), "WXB_MONGODB_URI": self.mongodb_uri,
                "WXB_REDIS_URL": self.redis_url, "WXB_MONGODB_DATABASE": self.database,
                "WXB_SECURITY_SECRET_KEY": self.keys["secret_key"],
                "WXB_SECURITY_FIELD_KEY": self.keys["field_key"]}

    def settings(self) -> Settings:
        return load_settings(environ=self.environ)

    async def connect(self, **kwargs: object) -> AppContext:
        settings = self.settings()
        return await AppContext.connect(settings, self.mongodb_uri, self.redis_url,
                                        registry=installed.registry(settings), **kwargs)

    def mongo_pid(self) -> int | None:
        if self.servers and self.servers.mongo and self.servers.mongo.proc:
            return self.servers.mongo.proc.pid
        return None

    def redis_pid(self) -> int | None:
        if self.servers and self.servers.redis and self.servers.redis.proc:
            return self.servers.redis.proc.pid
        return None


def _keys(data_dir: Path) -> dict[str, str]:
    path = data_dir / "bench-keys.json"
    keys = json.loads(path.read_text()) if path.exists() else {
        "secret_key": secrets.token_urlsafe(40),
        "field_key": base64.b64encode(secrets.token_bytes(32)).decode()}
    path.write_text(json.dumps(keys))
    os.chmod(path, 0o600)
    keys["secret_key"] = os.environ.get("WXB_SECURITY_SECRET_KEY", keys["secret_key"])
    keys["field_key"] = os.environ.get("WXB_SECURITY_FIELD_KEY", keys["field_key"])
    return keys


@contextlib.contextmanager
def bench_env(args: argparse.Namespace) -> Iterator[BenchEnv]:
    temporary = args.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="wxb-bench-")) if temporary else args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    servers = None
    try:
        if not (args.mongodb_uri and args.redis_url):
            servers = EmbeddedServers(data_dir, mongo=not args.mongodb_uri,
                                      redis=not args.redis_url).start()
        yield BenchEnv(data_dir, args.mongodb_uri or servers.mongodb_uri,
                       args.redis_url or servers.redis_url, args.database, _keys(data_dir), servers)
    finally:
        if servers is not None:
            servers.stop()
        if temporary:
            shutil.rmtree(data_dir, ignore_errors=True)


def proc_memory_mb(pid: int | None) -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident memory of a process, in MB."""
    found: dict[str, float] = {}
    if pid is None:
        return found
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return found


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time a process has used so far (Linux /proc); 0 if it is gone."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p99 of 100 samples is the 99th smallest)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
    return ordered[rank - 1]


def figures(samples_ms: list[float]) -> dict[str, float]:
    return {"median": statistics.median(samples_ms), "p99": percentile(samples_ms, 99),
            "min": min(samples_ms), "max": max(samples_ms)}


def start_server(environ: dict[str, str], log_path: Path) -> tuple[subprocess.Popen, str]:
    """``python -m wxbackend serve`` on a free port, once its /healthz answers; (process, base URL)."""
    port = free_port()
    env = {**os.environ, "WXB_LOG_FORMAT": "json", **environ}
    with log_path.open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "wxbackend", "serve", "--host", "127.0.0.1",
                                 "--port", str(port)], env=env, stdout=log, stderr=log,
                                cwd=Path(__file__).resolve().parent.parent)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; see {log_path}")
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not answer /healthz within 120 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def bench_branch(ctx: AppContext) -> dict:
    """A committee with one branch for a benchmark's members; the branch document."""
    from wxbackend.services import orgs
    from wxbackend.services.accounts.access import Actor

    system = Actor.system_actor("bench")
    root = await orgs.create(ctx, system, None, name="压测市委", org_type="committee",
                             category="organ", code="BENCH")
    return await orgs.create(ctx, system, root["_id"], name="压测第一党支部",
                             org_type="branch", category="organ", code="BENCH-1")


@contextlib.asynccontextmanager
async def env_context(environ: dict[str, str]) -> AsyncIterator[AppContext]:
    """A context on the servers a benchmark's server subprocess will use (indexes ensured)."""
    from models import ensure_indexes

    settings = load_settings(environ=environ)
    ctx = await AppContext.connect(settings, environ["WXB_MONGODB_URI"], environ["WXB_REDIS_URL"],
                                   registry=installed.registry(settings))
    try:
        await ensure_indexes(ctx.db, ctx.registry.models)
        yield ctx
    finally:
        await ctx.close()


async def bound_members(ctx: AppContext, count: int, channel: str,
                        openid_prefix: str) -> list[tuple[str, dict]]:
    """``count`` members of a new bench branch, each bound in ``channel``: (openid, member)."""
    from datetime import date, timedelta

    from wxbackend.idcard import make_id_card
    from wxbackend.services.accounts.access import Actor
    from wxbackend.services.orgs import binding, members

    system = Actor.system_actor("bench")
    branch = await bench_branch(ctx)
    bound = []
    for i in range(count):
        born = date(1980, 1, 1) + timedelta(days=i // 500)  # 500 order codes a day
        raw = {"name": f"党员{i:04d}", "id_card": make_id_card("350203", born, i % 500, "男"),
               "gender": "男", "party_status": "正式党员", "category": "在职",
               "joined_on": "2005-07-01", "full_on": "2006-07-01", "phone": f"139{i:08d}"}
        await members.create(ctx, system, branch["_id"], raw)
        openid = f"{openid_prefix}{i:06d}"
        member = await binding.bind(ctx, channel, openid, None, raw["name"], raw["id_card"],
                                    raw["phone"], "127.0.0.1")
        bound.append((openid, member))
    return bound
