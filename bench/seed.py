"""Benchmark: seed the demo city on the embedded server; time and peak memory.

    .venv/bin/python bench/seed.py --scale 1.0
    .venv/bin/python bench/seed.py --scale 1.0 --data-dir var/bench-city   # keep it for member_list.py

Reports the wall time of ``seed_city`` (with its phases), the peak resident
memory of this process (``ru_maxrss``) and of the SecantusDB subprocess
(``VmHWM`` from /proc, when this script started it), and what the driver's monitor
saw: a failed heartbeat cancels every operation in flight, which is how the seed
died with the client settings of before issue 19 (``[mongodb]`` in config/default.toml).
The seed loads into indexed collections (``wxbackend.demo.loader.IndexesFirst``), so
no index build holds the database for long.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymongo import monitoring

from bench._common import add_server_args, bench_env, proc_memory_mb
from wxbackend.demo import seed


class Heartbeats(monitoring.ServerHeartbeatListener):
    """The driver monitor's view of the seed: heartbeats answered, the slowest, the failed."""

    def __init__(self) -> None:
        self.answered, self.slowest, self.failures = 0, 0.0, []

    def started(self, event: monitoring.ServerHeartbeatStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.ServerHeartbeatSucceededEvent) -> None:
        self.answered += 1
        self.slowest = max(self.slowest, event.duration)

    def failed(self, event: monitoring.ServerHeartbeatFailedEvent) -> None:
        self.failures.append(f"{event.duration:.1f} s (awaited: {event.awaited}): {event.reply!r}")

    def summary(self) -> str:
        return (f"driver heartbeats: {self.answered} answered (slowest {self.slowest:.1f} s, a streamed "
                f"hello being held up to heartbeat_frequency_ms), {len(self.failures)} failed"
                + "".join(f"\n  failed after {line}" for line in self.failures))


async def run(args: argparse.Namespace) -> None:
    from models import ensure_indexes

    heartbeats = Heartbeats()
    with bench_env(args) as env:
        ctx = await env.connect(event_listeners=[heartbeats])
        try:
            if args.drop:
                await ctx.mongo.drop_database(env.database)
                await ctx.redis.flushdb()
            await ensure_indexes(ctx.db, ctx.registry.models)  # as every process does at start-up
            before = proc_memory_mb(env.mongo_pid())
            started = time.perf_counter()
            report = await seed.seed_city(ctx, args.scale)
            elapsed = time.perf_counter() - started
        finally:
            await ctx.close()
            print(heartbeats.summary())  # also when the seed failed: was it cancelled?
        after = proc_memory_mb(env.mongo_pid())
        print(report.summary())
        print(f"seed_city wall time: {elapsed:.1f} s")
        print(f"peak RSS of this process (ru_maxrss): "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
        if after:
            print(f"SecantusDB subprocess: RSS {before.get('VmRSS', 0):.0f} MB before, "
                  f"{after['VmRSS']:.0f} MB after, peak (VmHWM) {after['VmHWM']:.0f} MB")
        else:
            print("SecantusDB subprocess: not started by this script, memory not measured")
        print(f"data dir: {env.data_dir}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--drop", action="store_true", help="drop the database first")
    add_server_args(parser)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
