"""Member imports as runs on the job queue: the upload answers at once, a worker imports.

:func:`start` stores the uploaded file (encrypted: it is full of ID-card
numbers) and an ``import_runs`` document, and queues the ``member_import`` job;
the upload's answer does not wait for the 30 s a 10,000-row file takes. The
job (:func:`execute`) moves the run through its phases, each recorded before
the next begins, so that a worker killed at any point is replaced by one that
resumes where it stopped::

    queued -> reading -> checking -> staging -> writing -> counting -> auditing -> done
                 \\________\\___________\\_________\\-> failed (nothing changed)
                                                    \\-> rolling_back -> failed

Until ``writing`` nothing is changed, and a restart checks the file again.
``writing`` applies the staged chunks (:mod:`.import_writes`) and is resumed
chunk by chunk; the counters move after the last chunk, once. One import at a
time per organisation: the run's ``active`` key is unique until it finishes
(a second upload gets Conflict ``import_running``). One process at a time per
run: a lease in Redis, renewed with each step, taken over from a worker whose
heartbeat stopped. The file and the staged chunks are deleted when the run
finishes; the run (its counts and report) is pruned after :data:`KEEP_DAYS`::

    run = await start(ctx, actor, data, "名册.xlsx", default=branch, within=branch)
    view = view_of(await get(ctx, run["_id"]))      # what the progress page shows
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bson import Binary, ObjectId
from pymongo.errors import DuplicateKeyError

from models import imports as imports_model
from wxbackend import jobs
from wxbackend.context import AppContext
from wxbackend.errors import Conflict, DomainError, NotFound
from wxbackend.services import orgs
from wxbackend.services.accounts.access import Actor, Role
from wxbackend.services.orgs import import_checks, import_writes, lookups
from wxbackend.services.orgs.import_report import ImportIssue, ImportResult, issue_doc

log = logging.getLogger("wxbackend.import")

JOB = "member_import"
# The uploaded file is stored in pieces of this size (each one document).
PART_BYTES = 1 << 20
# Errors a run keeps for its report (the count of the rest is kept too).
KEPT_ERRORS = 2000
LEASE_KEY = "import:lease:"
LEASE_SECONDS = 60
KEEP_DAYS = 90
JOB_TIMEOUT = 3600
UNFINISHED = ("queued", "running")
PHASE_LABELS = {
    "queued": "排队等待导入", "reading": "正在读取文件", "checking": "正在逐行检查",
    "staging": "检查通过，正在准备写入", "writing": "正在写入党员信息",
    "counting": "正在更新组织的党员人数", "auditing": "正在记录审计日志",
    "rolling_back": "正在撤销本次导入已写入的数据", "done": "导入完成", "failed": "导入失败",
}
CRASHED = "导入时系统出错，没有做任何修改。请稍后重新上传；如仍出错，请联系系统管理员。"
FILE_LOST = "上传的文件没有完整保存，没有做任何修改，请重新上传。"
NOT_STARTED = "系统暂时无法开始导入，没有做任何修改，请稍后重新上传。"


class Busy(Exception):
    """Another process holds the run."""


class LostLease(Exception):
    """The run was taken over (this process seemed dead): stop without touching it."""


# -- starting -------------------------------------------------------------------------

def job_id(run_id: ObjectId) -> str:
    return f"{JOB}:{run_id}"


async def start(ctx: AppContext, actor: Actor, data: bytes, filename: str, *,
                default: dict[str, Any] | None, within: dict[str, Any] | None,
                enqueue: bool = True) -> dict[str, Any]:
    """Record the run and its file, and queue its job (``enqueue``) or leave it to the caller.

    Raises Conflict ``import_running`` while the organisation has an unfinished import,
    TooManyRequests when the actor's lookups are spent (the checks would need them).
    """
    await lookups.ensure_budget(ctx, actor)
    place = within or default
    key = place["_id"] if place else "any"
    now = ctx.clock.now()
    run = {"_id": ObjectId(), "org_id": place["_id"] if place else None,
           "org_ancestors": list(place["org_ancestors"]) if place else [], "active": key,
           "default_org_id": default["_id"] if default else None,
           "within_org_id": within["_id"] if within else None, "actor": _actor_doc(actor),
           "filename": filename[:200], "size": len(data), "state": "queued", "phase": "queued",
           "attempts": 0, "rows": 0, "checked": 0, "written": 0, "chunks": 0,
           "created_at": now, "updated_at": now}
    try:
        await imports_model.insert_run(ctx.db, run)
    except DuplicateKeyError:
        running = await imports_model.active_run(ctx.db, key)
        if running is not None:
            await ensure_job(ctx, running)
        raise Conflict("import_running", busy_message(running)) from None
    try:
        parts = await asyncio.to_thread(_seal, ctx, run["_id"], data)
        await imports_model.insert_file(ctx.db, run["_id"], parts)
        if enqueue:
            await jobs.enqueue(ctx, JOB, str(run["_id"]), _job_id=job_id(run["_id"]))
    except BaseException:
        # The upload answers with an error: this run must not go ahead later, nor block the next.
        await _finish(ctx, run, "failed", _file_issue(run, NOT_STARTED, "import_not_started"))
        raise
    return run


def busy_message(running: dict[str, Any] | None) -> str:
    what = f"（文件“{running['filename']}”，{PHASE_LABELS.get(running['phase'], '')}）" if running else ""
    return f"该组织正在导入党员{what}，请等待上一次导入完成后再试"


def _actor_doc(actor: Actor) -> dict[str, Any]:
    return {"id": actor.id, "name": actor.name, "ip": actor.ip, "system": actor.system,
            "roles": [{"role": r.role, "org_id": r.org_id} for r in actor.roles]}


def _actor(doc: dict[str, Any]) -> Actor:
    """The uploader as they were at the upload (their roles then)."""
    return Actor(id=doc["id"], name=doc["name"], ip=doc.get("ip", ""), system=doc.get("system", False),
                 roles=[Role(r["role"], r["org_id"]) for r in doc.get("roles", [])])


def _seal(ctx: AppContext, run_id: ObjectId, data: bytes) -> list[Binary]:
    """The file in encrypted pieces; each piece's purpose names its run and place."""
    return [ctx.cipher.encrypt(base64.b64encode(data[i:i + PART_BYTES]).decode("ascii"),
                               purpose=f"import:{run_id}:{n}")
            for n, i in enumerate(range(0, max(len(data), 1), PART_BYTES))]


def _unseal(ctx: AppContext, run_id: ObjectId, parts: list[Binary]) -> bytes:
    return b"".join(base64.b64decode(ctx.cipher.decrypt(part, purpose=f"import:{run_id}:{n}"))
                    for n, part in enumerate(parts))


async def ensure_job(ctx: AppContext, run: dict[str, Any]) -> None:
    """Queue the job of an unfinished run that nobody is running and no job holds
    (Redis lost it, or a command line import died): it resumes the run."""
    if run["state"] not in UNFINISHED or await ctx.redis.exists(LEASE_KEY + str(run["_id"])):
        return
    name = job_id(run["_id"])
    if not (await jobs.job_exists(ctx, [name]))[name]:
        await jobs.enqueue(ctx, JOB, str(run["_id"]), _job_id=name)


# -- the job ------------------------------------------------------------------------------

@jobs.job(name=JOB, timeout=JOB_TIMEOUT, max_tries=10)
async def member_import(ctx: AppContext, run_id: str) -> str:
    try:
        result = await execute(ctx, ObjectId(run_id), token=_token("job"))
    except (Busy, LostLease) as exc:
        log.info("member import %s: %s, left to its holder", run_id, exc.__class__.__name__)
        return "busy"
    except DomainError:
        return "failed"  # recorded in the run
    return "done" if result.ok else "failed"


async def execute(ctx: AppContext, run_id: ObjectId, *, token: str | None = None) -> ImportResult:
    """Take the run through its remaining phases; its result once it is done or failed."""
    token = token or _token("inline")
    if not await _claim(ctx, run_id, token):
        raise Busy(str(run_id))
    try:
        while True:
            run = await imports_model.get_run(ctx.db, run_id)
            if run is None:
                raise NotFound("import_not_found", "找不到该次导入")
            if run["state"] not in UNFINISHED:
                await _cleanup(ctx, run)
                return result_of(run)
            await _keep(ctx, run_id, token)
            await _step(ctx, run, token)
    finally:
        await ctx.redis.eval(_RELEASE, 1, LEASE_KEY + str(run_id), token)


async def _step(ctx: AppContext, run: dict[str, Any], token: str) -> None:
    step = _STEPS[run["phase"]]
    try:
        await step(ctx, run, token)
    except (jobs.Retry, LostLease, *jobs.TRANSIENT):
        raise  # resumed by the job's next try, or by the holder
    except DomainError:
        raise  # recorded by the step
    except Exception:
        log.exception("member import %s failed in phase %s", run["_id"], run["phase"])
        await _abort(ctx, run["_id"], token)
        raise


async def _check_and_stage(ctx: AppContext, run: dict[str, Any], token: str) -> None:
    run_id, now = run["_id"], ctx.clock.now()
    await imports_model.update_run_if(ctx.db, run_id, {"state": {"$in": list(UNFINISHED)}}, {
        "$set": {"state": "running", "phase": "reading", "checked": 0, "started_at": now, "updated_at": now},
        "$inc": {"attempts": 1}})
    await imports_model.delete_chunks(ctx.db, run_id)  # a staging cut short
    parts = await imports_model.file_parts(ctx.db, run_id)
    if not parts or len(parts) != -(-max(run["size"], 1) // PART_BYTES):
        await _finish(ctx, run, "failed", _file_issue(run, FILE_LOST, "import_file_lost"))
        return
    data = await asyncio.to_thread(_unseal, ctx, run_id, parts)

    async def progress(phase: str, done: int, total: int) -> None:
        await _progress(ctx, run_id, token, {"phase": phase, "checked": done, "rows": total})

    try:
        default = await orgs.get(ctx, run["default_org_id"]) if run["default_org_id"] else None
        within = await orgs.get(ctx, run["within_org_id"]) if run["within_org_id"] else None
        result, rows = await import_checks.check_file(ctx, _actor(run["actor"]), data, run["filename"],
                                                      default=default, within=within, progress=progress)
    except DomainError as exc:
        await _finish(ctx, run, "failed", _file_issue(run, exc.message, exc.code))
        raise
    if not result.ok:
        await _finish(ctx, run, "failed", result)
        return
    await _progress(ctx, run_id, token, {"phase": "staging"})
    plan = await import_writes.plan_writes(ctx, rows, run_id, run["filename"])
    await imports_model.insert_chunks(ctx.db, plan.chunks)
    await _keep(ctx, run_id, token)
    await imports_model.update_run_if(ctx.db, run_id, {"phase": "staging"}, {"$set": {
        "phase": "writing", "chunks": len(plan.chunks), "applied": 0, "written": 0, "updated_at": ctx.clock.now(),
        "plan": {"rows": result.rows, "created": plan.created, "updated": plan.updated,
                 "unchanged": plan.unchanged, "counts": plan.counts, "audits": plan.audits}}})


async def _write(ctx: AppContext, run: dict[str, Any], token: str) -> None:
    """The chunks in order, from the first one not known to be in (``applied``)."""
    run_id, written = run["_id"], run["written"]
    for seq in range(run.get("applied", 0), run["chunks"]):
        if jobs.is_stopping(ctx):
            raise jobs.Retry(defer=1)  # the worker is stopping: the next one goes on from here
        chunk = await imports_model.get_chunk(ctx.db, run_id, seq)
        assert chunk is not None
        await imports_model.set_run(ctx.db, run_id, {"applying": seq})
        taken = await import_writes.apply_chunk(ctx, chunk)
        if taken:
            await imports_model.update_run_if(ctx.db, run_id, {"phase": "writing"}, {"$set": {
                "phase": "rolling_back", "pending_errors": [issue_doc(i) for i in taken]}})
            return
        written += chunk["rows"]
        await _progress(ctx, run_id, token, {"applied": seq + 1, "written": written})
    await imports_model.update_run_if(ctx.db, run_id, {"phase": "writing"},
                                      {"$set": {"phase": "counting", "updated_at": ctx.clock.now()}})


async def _roll_back(ctx: AppContext, run: dict[str, Any], token: str) -> None:
    """Undo the chunks written (and the one being written): each undo may be repeated."""
    last = max(run.get("applied", 0) - 1, run.get("applying", -1))
    for seq in range(last, -1, -1):
        chunk = await imports_model.get_chunk(ctx.db, run["_id"], seq)
        if chunk is not None:
            await import_writes.rollback_chunk(ctx, chunk)
        await _keep(ctx, run["_id"], token)
    errors = [ImportIssue(e["row"], e["column"], e["message"], e["code"])
              for e in run.get("pending_errors") or []]
    await _finish(ctx, run, "failed", ImportResult(run["filename"], run["rows"], errors=errors))
    log.warning("member import %s rolled back: %d rows registered meanwhile", run["_id"], len(errors))


async def _count(ctx: AppContext, run: dict[str, Any], token: str) -> None:
    await import_writes.count(ctx, run)
    await imports_model.update_run_if(ctx.db, run["_id"], {"phase": "counting"},
                                      {"$set": {"phase": "auditing", "updated_at": ctx.clock.now()}})
    await import_writes.forget_counted(ctx, run)


async def _audit(ctx: AppContext, run: dict[str, Any], token: str) -> None:
    await import_writes.audit(ctx, _actor(run["actor"]), run)
    plan = run["plan"]
    result = ImportResult(run["filename"], plan["rows"], plan["created"], plan["updated"], plan["unchanged"])
    await _finish(ctx, run, "done", result)
    log.info("member import of %s: %d created, %d updated, %d unchanged", run["filename"],
             result.created, result.updated, result.unchanged)


_STEPS = {"queued": _check_and_stage, "reading": _check_and_stage, "checking": _check_and_stage,
          "staging": _check_and_stage, "writing": _write, "rolling_back": _roll_back,
          "counting": _count, "auditing": _audit}


async def _abort(ctx: AppContext, run_id: ObjectId, token: str) -> None:
    """An unexpected error: fail the run, undoing what it wrote; once the counters have
    moved (counting, auditing) only the next try can finish it."""
    run = await imports_model.get_run(ctx.db, run_id)
    if run is None or run["state"] not in UNFINISHED:
        return
    if run["phase"] in ("counting", "auditing"):
        log.critical("member import %s wrote every member but failed in %s; the job's next try "
                     "(or opening its page) finishes it", run_id, run["phase"])
        return
    issue = {"row": None, "column": "", "message": CRASHED, "code": "import_crashed"}
    if run["phase"] in ("writing", "rolling_back"):
        pending = run.get("pending_errors") or [issue]
        await imports_model.set_run(ctx.db, run_id, {"phase": "rolling_back", "pending_errors": pending})
        await _roll_back(ctx, {**run, "phase": "rolling_back", "pending_errors": pending}, token)
        return
    await _finish(ctx, run, "failed", _file_issue(run, CRASHED, "import_crashed"))


def _file_issue(run: dict[str, Any], message: str, code: str) -> ImportResult:
    return ImportResult(run["filename"], run.get("rows", 0), errors=[ImportIssue(None, "", message, code)])


async def _finish(ctx: AppContext, run: dict[str, Any], state: str, result: ImportResult) -> None:
    now = ctx.clock.now()
    await imports_model.update_run_if(ctx.db, run["_id"], {"state": {"$in": list(UNFINISHED)}}, {
        "$set": {"state": state, "phase": state, "rows": result.rows, "result": result.to_doc(KEPT_ERRORS),
                 "finished_at": now, "updated_at": now},
        "$unset": {"active": "", "pending_errors": ""}})
    await _cleanup(ctx, run)


async def _cleanup(ctx: AppContext, run: dict[str, Any]) -> None:
    """The personal data a finished run no longer needs: its file and staged chunks."""
    await imports_model.delete_file(ctx.db, run["_id"])
    await imports_model.delete_chunks(ctx.db, run["_id"])
    await import_writes.forget_counted(ctx, run)


@jobs.pruner
async def prune_import_runs(ctx: AppContext) -> int:
    """Finished runs older than KEEP_DAYS, with whatever a crash left of them."""
    old = await imports_model.created_before(ctx.db, ctx.clock.now() - timedelta(days=KEEP_DAYS), 1000)
    done = [run["_id"] for run in old if run["state"] not in UNFINISHED]
    for run_id in done:
        await imports_model.delete_file(ctx.db, run_id)
        await imports_model.delete_chunks(ctx.db, run_id)
    await imports_model.delete_runs(ctx.db, done)
    return len(done)


# -- one process per run --------------------------------------------------------------------

# Compare-and-set scripts: only the holder renews or releases; a dead holder's lease is taken over.
_KEEP = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_TAKE_OVER = ("if redis.call('GET', KEYS[1]) == ARGV[1] then "
              "redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) return 1 end return 0")


def _token(kind: str) -> str:
    """``job|host:pid|random`` in a worker (whose heartbeat tells if it lives), ``inline|...``
    in a command or a test (whose lease only expires)."""
    return f"{kind}|{jobs.worker_id()}|{secrets.token_hex(4)}"


async def _claim(ctx: AppContext, run_id: ObjectId, token: str) -> bool:
    key = LEASE_KEY + str(run_id)
    if await ctx.redis.set(key, token, nx=True, ex=LEASE_SECONDS):
        return True
    holder = await ctx.redis.get(key)
    if holder is None:
        return bool(await ctx.redis.set(key, token, nx=True, ex=LEASE_SECONDS))
    kind, worker, _ = holder.decode().split("|", 2)
    if kind != "job" or await ctx.redis.exists(jobs.WORKER_KEY + worker):
        return False
    taken = await ctx.redis.eval(_TAKE_OVER, 1, key, holder, token, LEASE_SECONDS)
    if taken:
        log.warning("member import %s: taken over from %s, whose heartbeat stopped", run_id, worker)
    return bool(taken)


async def _keep(ctx: AppContext, run_id: ObjectId, token: str) -> None:
    if not await ctx.redis.eval(_KEEP, 1, LEASE_KEY + str(run_id), token, LEASE_SECONDS):
        raise LostLease(str(run_id))


async def _progress(ctx: AppContext, run_id: ObjectId, token: str, changes: dict[str, Any]) -> None:
    await _keep(ctx, run_id, token)
    await imports_model.set_run(ctx.db, run_id, {**changes, "updated_at": ctx.clock.now()})


# -- what the pages show ----------------------------------------------------------------------

async def get(ctx: AppContext, run_id: ObjectId) -> dict[str, Any] | None:
    return await imports_model.get_run(ctx.db, run_id, {"plan.counts": 0, "plan.audits": 0, "actor": 0})


def result_of(run: dict[str, Any]) -> ImportResult:
    return ImportResult.from_doc(run["filename"], run.get("result") or {"rows": run.get("rows", 0)})


@dataclass
class RunView:
    """A run as the progress page and its JSON show it."""

    id: ObjectId
    org_id: ObjectId | None
    filename: str
    state: str  # queued | running | done | failed
    phase: str
    label: str
    done: int
    total: int
    unit: str  # 行 (rows checked) or 人 (members written)
    percent: int
    result: ImportResult | None

    def as_json(self) -> dict[str, Any]:
        return {"id": str(self.id), "state": self.state, "phase": self.phase, "label": self.label,
                "done": self.done, "total": self.total, "unit": self.unit, "percent": self.percent,
                "text": self.text}

    @property
    def text(self) -> str:
        if self.phase == "checking":
            return f"{self.label}：已检查 {self.done} / {self.total} 行"
        if self.phase == "writing":
            return f"{self.label}：已写入 {self.done} / {self.total} 人"
        return self.label + ("…" if self.state in UNFINISHED else "")


def view_of(run: dict[str, Any]) -> RunView:
    phase, rows = run["phase"], run.get("rows", 0)
    plan = run.get("plan") or {}
    to_write = plan.get("created", 0) + plan.get("updated", 0)
    done, total, unit, percent = 0, rows, "行", {"queued": 0, "reading": 2, "staging": 50}.get(phase, 97)
    if phase == "checking":
        done = run.get("checked", 0)
        percent = 5 + 45 * done // max(rows, 1)
    elif phase == "writing":
        done, total, unit = run.get("written", 0), to_write, "人"
        percent = 50 + 45 * done // max(to_write, 1)
    elif run["state"] not in UNFINISHED:
        done, percent = rows, 100
    finished = run["state"] not in UNFINISHED
    return RunView(run["_id"], run.get("org_id"), run["filename"], run["state"], phase,
                   PHASE_LABELS.get(phase, phase), done, total, unit, percent,
                   result_of(run) if finished else None)
