"""Member import from the secretaries' spreadsheet: all or nothing, with a row-by-row report.

Every row is checked before anything is written (:mod:`.import_checks`): its
fields, its 党组织编码, ID-card numbers repeated in the file, members already
registered elsewhere. One bad row means nothing changes, and the report lists
every problem by row number (header = row 1), column and reason. A clean file
inserts the new members and updates those already registered (matched by
ID-card number), so importing the same file again updates rather than
duplicates.

An import is a run (:mod:`.import_runs`): the management web starts one and a
worker carries it out (:func:`start_upload`, then the page follows
:func:`run_view`); the command line and the tests carry it out in their own
process (:func:`import_file`, :func:`import_path`). Either way the same phases
run, a crashed run is resumed without writing anything twice, and a run that
cannot finish changes nothing::

    run = await importer.start_upload(ctx, actor, data, "名册.xlsx", target_org_id=branch_id)
    view = await importer.run_view(ctx, actor, branch_id, run["_id"])   # view.state, view.percent

    result = await importer.import_file(ctx, actor, data, "名册.xlsx", target_org_id=branch_id)
    if not result.ok:
        for issue in result.errors:
            print(issue.row, issue.column, issue.message)
    print(result.summary())

The file format (headers, aliases, cell types) is :mod:`.import_sheet`'s job.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bson import ObjectId

from models import imports as imports_model
from models import orgs as orgs_model
from wxbackend.context import AppContext
from wxbackend.errors import NotFound
from wxbackend.services import orgs
from wxbackend.services.accounts.access import Actor
from wxbackend.services.orgs import import_runs
from wxbackend.services.orgs.import_report import ImportIssue, ImportResult
from wxbackend.services.orgs.import_runs import RunView
from wxbackend.services.orgs.import_sheet import MAX_BYTES
from wxbackend.services.orgs.import_sheet import Sheet as Sheet  # re-exported: callers build one

__all__ = ["ImportIssue", "ImportResult", "RunView", "Sheet", "active_run", "import_file",
           "import_path", "recent_runs", "run_view", "start_upload"]

# Finished runs the import page lists.
RECENT = 5


async def _target(ctx: AppContext, actor: Actor, target_org_id: ObjectId) -> dict[str, Any]:
    target = await orgs.get(ctx, target_org_id)
    actor.require("member.import", target["org_ancestors"])
    return target


async def start_upload(ctx: AppContext, actor: Actor, data: bytes, filename: str, *,
                       target_org_id: ObjectId) -> dict[str, Any]:
    """Store an uploaded file and queue its import into ``target_org_id`` (the page's
    organisation); answers at once with the run. Rows without a 党组织编码 go to the
    target; rows with one must name an organisation of the target's subtree.

    Raises Conflict ``import_running`` while the organisation has an import under
    way, TooManyRequests when the actor's lookups are spent; the file's problems
    come in the run's report.
    """
    target = await _target(ctx, actor, target_org_id)
    return await import_runs.start(ctx, actor, data, filename, default=target, within=target)


async def import_file(ctx: AppContext, actor: Actor, data: bytes, filename: str, *,
                      target_org_id: ObjectId) -> ImportResult:
    """:func:`start_upload` carried out here rather than by a worker: the result."""
    target = await _target(ctx, actor, target_org_id)
    run = await import_runs.start(ctx, actor, data, filename, default=target, within=target, enqueue=False)
    return await import_runs.execute(ctx, run["_id"])


async def import_path(ctx: AppContext, actor: Actor, path: str | Path, *,
                      default_org_code: str | None = None) -> ImportResult:
    """Import a file from disk (the ``import-members`` command), in this process."""
    path = Path(path)
    default = None
    if default_org_code:
        default = await orgs_model.get_by_code(ctx.db, default_org_code.strip())
        if default is None:
            raise NotFound("org_code_unknown", f"找不到组织编码“{default_org_code}”")
        actor.require("member.import", default["org_ancestors"])
    result = ImportResult(path.name)
    try:
        if path.stat().st_size > MAX_BYTES:
            result.errors.append(ImportIssue(None, "", "文件超过10MB，请分成几个文件分别导入",
                                             "import_too_large"))
            return result
        data = await asyncio.to_thread(path.read_bytes)
    except OSError as exc:
        result.errors.append(ImportIssue(None, "", f"无法打开文件：{exc.strerror or exc}",
                                         "import_unreadable"))
        return result
    run = await import_runs.start(ctx, actor, data, path.name, default=default, within=None, enqueue=False)
    return await import_runs.execute(ctx, run["_id"])


# -- following a run ----------------------------------------------------------------

async def run_view(ctx: AppContext, actor: Actor, org_id: ObjectId, run_id: ObjectId) -> RunView:
    """An import of ``org_id`` as its page shows it. An unfinished run whose job was lost
    (Redis emptied, a command line import killed) is queued again here."""
    run = await import_runs.get(ctx, run_id)
    if run is None or run.get("org_id") != org_id:
        raise NotFound("import_not_found", "找不到该次导入")
    actor.require("member.import", run["org_ancestors"])
    await import_runs.ensure_job(ctx, run)
    return import_runs.view_of(run)


async def active_run(ctx: AppContext, actor: Actor, org: dict[str, Any]) -> RunView | None:
    """The organisation's import under way, if any."""
    actor.require("member.import", org["org_ancestors"])
    found = await imports_model.active_run(ctx.db, org["_id"])
    if found is None:
        return None
    await import_runs.ensure_job(ctx, found)
    return import_runs.view_of(found)


async def recent_runs(ctx: AppContext, actor: Actor, org: dict[str, Any]) -> list[RunView]:
    actor.require("member.import", org["org_ancestors"])
    return [import_runs.view_of(run) for run in await imports_model.recent_runs(ctx.db, org["_id"], RECENT)]
