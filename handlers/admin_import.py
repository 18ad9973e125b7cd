"""Management web: import members from a spreadsheet into a branch, and the template.

``GET /admin/orgs/<id>/import`` shows the upload form (and the import under way,
if any); ``POST`` (multipart, field ``file``) stores the file, queues its import
(:func:`wxbackend.services.orgs.importer.start_upload`) and redirects at once to
the run's page ``/admin/orgs/<id>/import/<run>``, which shows its progress
(``#import-status`` with ``data-state`` queued/running/done/failed, polling
``.../status`` for JSON) and then the counts or the row-by-row error table. ``GET
/admin/import-template.xlsx`` downloads the template secretaries fill in.
"""

from __future__ import annotations

from typing import Any

import tornado.escape
import tornado.web
from bson import ObjectId

from handlers.admin_base import AdminHandler
from handlers.base import OBJECT_ID, PATH_ID
from wxbackend.errors import Conflict, object_id
from wxbackend.services import orgs
from wxbackend.services.orgs import importer
from wxbackend.services.orgs.import_sheet import MAX_BYTES
from wxbackend.settings import ROOT

TEMPLATE_FILE = ROOT / "templates" / "member-import-template.xlsx"
TEMPLATE_NAME = "党员信息导入模板.xlsx"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# The error table shows this many rows; the count of the rest is given.
SHOWN_ERRORS = 1000


class _ImportPage(AdminHandler):
    async def _org(self, org_id: str) -> dict[str, Any]:
        org = await orgs.view(self.ctx, self.actor, org_id)
        self.actor.require("member.import", org["org_ancestors"])
        return org

    async def _render(self, org: dict[str, Any], run: importer.RunView | None, *,
                      missing_file: bool = False, busy: str = "") -> None:
        active = run if run is not None and run.result is None else \
            await importer.active_run(self.ctx, self.actor, org)
        self.render("admin/import.html", org=org, run=run or active, missing_file=missing_file,
                    busy=busy, recent=await importer.recent_runs(self.ctx, self.actor, org),
                    shown=SHOWN_ERRORS, max_mb=MAX_BYTES // (1024 * 1024))


class ImportHandler(_ImportPage):
    @tornado.web.authenticated
    async def get(self, org_id: str) -> None:
        org = await self._org(org_id)
        await self._render(org, None)

    @tornado.web.authenticated
    async def post(self, org_id: str) -> None:
        org = await self._org(org_id)
        uploads = self.request.files.get("file") or []
        if not uploads or not uploads[0]["filename"]:
            self.set_status(400)
            await self._render(org, None, missing_file=True)
            return
        upload = uploads[0]
        try:
            run = await importer.start_upload(self.ctx, self.actor, upload["body"], upload["filename"],
                                              target_org_id=org["_id"])
        except Conflict as exc:
            self.set_status(409)
            await self._render(org, None, busy=exc.message)
            return
        self.redirect(f"/admin/orgs/{org['_id']}/import/{run['_id']}", status=303)


class ImportRunHandler(_ImportPage):
    @tornado.web.authenticated
    async def get(self, org_id: str, run_id: str) -> None:
        org = await self._org(org_id)
        run = await importer.run_view(self.ctx, self.actor, org["_id"], _run_id(run_id))
        if run.result is not None:
            org = await orgs.get(self.ctx, org["_id"])  # fresh counters
        await self._render(org, run)


class ImportStatusHandler(AdminHandler):
    """What the run page polls: ``{state, phase, label, done, total, unit, percent, text}``."""

    def wants_json(self) -> bool:
        return True

    @tornado.web.authenticated
    async def get(self, org_id: str, run_id: str) -> None:
        org = await orgs.view(self.ctx, self.actor, org_id)
        run = await importer.run_view(self.ctx, self.actor, org["_id"], _run_id(run_id))
        self.write(run.as_json())


def _run_id(raw: str) -> ObjectId:
    return object_id(raw, "import_not_found", "找不到该次导入")


class TemplateHandler(AdminHandler):
    @tornado.web.authenticated
    def get(self) -> None:
        self.set_header("Content-Type", XLSX_TYPE)
        self.set_header("Content-Disposition", "attachment; filename=member-import-template.xlsx; "
                        "filename*=UTF-8''" + tornado.escape.url_escape(TEMPLATE_NAME, plus=False))
        self.finish(TEMPLATE_FILE.read_bytes())


ROUTES = [
    (rf"/admin/orgs/{PATH_ID}/import", ImportHandler),
    (rf"/admin/orgs/{PATH_ID}/import/({OBJECT_ID})", ImportRunHandler),
    (rf"/admin/orgs/{PATH_ID}/import/({OBJECT_ID})/status", ImportStatusHandler),
    (r"/admin/import-template.xlsx", TemplateHandler),
]
