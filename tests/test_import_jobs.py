"""Member imports on the job queue: a worker killed or stopped half way, a lost job, the
stored file, a small import's turnaround, old runs pruned.

All or nothing must hold under a crash: a run killed while writing is resumed by the next
worker and ends with exactly the members and counters of one clean import.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import socket
import time
from datetime import timedelta
from typing import Any

from bson import ObjectId

from tests.conftest import ADMIN_PASSWORD, SYSTEM, actor_of
from tests.notifykit import drain, spawn_worker, wait_for, worker_env
from tests.test_import import (
    active_in,
    counters,
    csv_bytes,
    import_audits,
    people,
    table,
    upload,
    xlsx,
)
from wxbackend import jobs
from wxbackend.services.orgs import import_runs, importer


async def start(ctx, city, data: bytes, name: str = "名册.xlsx") -> dict[str, Any]:
    return await importer.start_upload(ctx, actor_of(city, "sec_a1"), data, name,
                                       target_org_id=city.org("branch_a1"))


async def stored(ctx, run_id: ObjectId) -> dict[str, Any]:
    return await ctx.db.import_runs.find_one({"_id": run_id})


async def leftovers(ctx, run_id: ObjectId) -> tuple[int, int]:
    return (await ctx.db.import_files.count_documents({"run_id": run_id}),
            await ctx.db.import_chunks.count_documents({"run_id": run_id}))


async def assert_imported_once(ctx, city, run_id: ObjectId, n: int) -> None:
    """Exactly what one clean import of ``n`` new full members leaves behind."""
    run = await stored(ctx, run_id)
    assert (run["state"], run["result"]["created"], run["result"]["error_count"]) == ("done", n, 0)
    assert "active" not in run
    assert await active_in(ctx, city.org("branch_a1")) == n
    assert await counters(ctx, city, "branch_a1") == (n, n, n)
    assert await counters(ctx, city, "district_a") == (0, 0, n)
    assert await counters(ctx, city, "root") == (0, 0, n)
    [entry] = await import_audits(ctx, city.org("branch_a1"))
    assert entry["details"]["created"] == n
    assert await leftovers(ctx, run_id) == (0, 0)
    for name in ("branch_a1", "district_a", "root"):
        org = await ctx.db.organisations.find_one({"_id": city.org(name)})
        assert not org.get("count_markers")


async def test_a_worker_killed_while_writing_is_resumed_with_exactly_the_right_members(ctx, city, tmp_path,
                                                                                     caplog):
    n = 600
    ctx.settings.members.import_chunk_rows = 100
    ctx.settings.jobs.heartbeat_seconds = 0.5
    run = await start(ctx, city, xlsx(table(people(n))))

    async def writing() -> bool:
        doc = await stored(ctx, run["_id"])
        return doc["phase"] == "writing" and doc["written"] >= 100

    first = spawn_worker(worker_env(ctx), tmp_path / "worker-1.log")
    try:
        await wait_for(writing, timeout=60, what="the first chunk")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    half = await stored(ctx, run["_id"])
    assert (half["state"], half["phase"]) == ("running", "writing") and half["written"] < n
    assert 100 <= await active_in(ctx, city.org("branch_a1")) < n  # half written ...
    assert await counters(ctx, city, "branch_a1") == (0, 0, 0)  # ... and not counted
    assert await import_audits(ctx, city.org("branch_a1")) == []

    await asyncio.sleep(1.6)  # the killed worker's heartbeat lapses
    assert await jobs.release_dead_workers(ctx) == 1
    await drain(ctx, timeout=60)  # the next worker (here, in this process) takes the job up
    assert any("taken over" in r.getMessage() for r in caplog.records)
    assert (await stored(ctx, run["_id"]))["attempts"] == 1  # resumed, not checked again
    await assert_imported_once(ctx, city, run["_id"], n)


async def test_a_stopping_worker_hands_the_import_over_between_chunks(ctx, city):
    ctx.settings.members.import_chunk_rows = 2
    n = 10
    run = await start(ctx, city, xlsx(table(people(n))))
    worker_state = ctx.state(jobs.WorkerState)

    async def stop_after_first_chunk() -> None:
        while (await stored(ctx, run["_id"]))["written"] < 2:
            await asyncio.sleep(0.002)
        worker_state.stopping = True  # as SIGTERM does

    watcher = asyncio.ensure_future(stop_after_first_chunk())
    await drain(ctx, horizon=0.5)
    await watcher
    half = await stored(ctx, run["_id"])
    assert half["phase"] == "writing" and 2 <= half["written"] < n
    assert 2 <= await active_in(ctx, city.org("branch_a1")) < n
    assert await counters(ctx, city, "branch_a1") == (0, 0, 0)
    worker_state.stopping = False
    await drain(ctx, horizon=2)
    await assert_imported_once(ctx, city, run["_id"], n)


async def test_a_lost_job_is_queued_again_when_the_page_is_opened(ctx, city):
    run = await start(ctx, city, xlsx(table(people(3))))
    name = import_runs.job_id(run["_id"])
    await ctx.redis.delete(ctx.settings.jobs.queue_name, f"arq:job:{name}")  # Redis lost it
    assert (await jobs.job_exists(ctx, [name]))[name] is False
    view = await importer.run_view(ctx, actor_of(city, "sec_a1"), city.org("branch_a1"), run["_id"])
    assert view.state == "queued"
    assert (await jobs.job_exists(ctx, [name]))[name] is True
    await drain(ctx)
    await assert_imported_once(ctx, city, run["_id"], 3)


async def test_the_uploaded_file_is_stored_encrypted_and_deleted_when_done(ctx, city):
    rows = people(3)
    data = csv_bytes(table(rows))
    run = await start(ctx, city, data, "名册.csv")
    parts = await ctx.db.import_files.find({"run_id": run["_id"]}).to_list()
    assert len(parts) == 1
    sealed = bytes(parts[0]["data"])
    for secret in (rows[0]["id_card"].encode(), rows[0]["name"].encode(), base64.b64encode(data[:60])):
        assert secret not in sealed
    opened = ctx.cipher.decrypt(parts[0]["data"], purpose=f"import:{run['_id']}:0")
    assert base64.b64decode(opened) == data
    await drain(ctx)
    assert (await stored(ctx, run["_id"]))["state"] == "done"
    assert await leftovers(ctx, run["_id"]) == (0, 0)


async def test_a_small_import_is_shown_done_within_two_seconds_with_a_worker_running(ctx, city, web, tmp_path):
    worker = spawn_worker(worker_env(ctx), tmp_path / "worker.log")
    try:
        heartbeat = jobs.WORKER_KEY + f"{socket.gethostname()}:{worker.pid}"
        await wait_for(lambda: ctx.redis.exists(heartbeat), timeout=60, what="the worker")
        await web.login("sec_a1", ADMIN_PASSWORD)
        url = f"/admin/orgs/{city.org('branch_a1')}/import"
        started = time.monotonic()
        answer = await upload(web, url, "名册.xlsx", xlsx(table(people(3))))
        assert answer.status_code == 303
        page = answer.headers["location"]
        while (await web.get(page + "/status")).json()["state"] not in ("done", "failed"):
            assert time.monotonic() - started < 2.0, "a 3-row import took over 2 s"
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
        shown = await web.get(page)
        assert 'data-state="done"' in shown.text and 'id="created">3<' in shown.text, shown.text
        assert elapsed < 2.0
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(20)


async def test_run_pages_belong_to_their_branch(ctx, city, web):
    run = await start(ctx, city, xlsx(table(people(1))))
    await web.login("sec_a1", ADMIN_PASSWORD)
    own = f"/admin/orgs/{city.org('branch_a1')}/import/{run['_id']}"
    assert (await web.get(own)).status_code == 200
    assert (await web.get(f"/admin/orgs/{city.org('branch_a2')}/import/{run['_id']}")).status_code == 403
    assert (await web.get(f"/admin/orgs/{city.org('branch_a1')}/import/{ObjectId()}")).status_code == 404
    await web.login("west", ADMIN_PASSWORD)
    assert (await web.get(own)).status_code == 403
    assert (await web.get(own + "/status")).status_code == 403


async def test_finished_runs_are_pruned_after_90_days(ctx, city):
    result = await importer.import_file(ctx, SYSTEM, xlsx(table(people(2))), "名册.xlsx",
                                        target_org_id=city.org("branch_a1"))
    assert result.ok
    waiting = await start(ctx, city, xlsx(table(people(1))))
    assert await import_runs.prune_import_runs(ctx) == 0
    ctx.clock.advance(timedelta(days=import_runs.KEEP_DAYS + 1))
    assert await import_runs.prune_import_runs(ctx) == 1
    assert await ctx.db.import_runs.count_documents({"org_id": city.org("branch_a1")}) == 1
    assert await stored(ctx, waiting["_id"]) is not None  # unfinished: kept
