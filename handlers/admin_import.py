"""Management web: import members from a spreadsheet into a branch, and the template.

``GET /admin/orgs/<id>/import`` shows the upload form; ``POST`` (multipart,
field ``file``) runs :func:`wxbackend.services.orgs.importer.import_file` and shows
either the counts or the row-by-row error table. ``GET
/admin/import-template.xlsx`` downloads the template secretaries fill in.
"""

from __future__ import annotations

from typing import Any

import tornado.escape
import tornado.web

from handlers.admin_base import AdminHandler
from handlers.base import PATH_ID
from wxbackend.services import orgs
from wxbackend.services.orgs import importer
from wxbackend.services.orgs.import_sheet import MAX_BYTES
from wxbackend.settings import ROOT

TEMPLATE_FILE = ROOT / "templates" / "member-import-template.xlsx"
TEMPLATE_NAME = "党员信息导入模板.xlsx"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# The error table shows this many rows; the count of the rest is given.
SHOWN_ERRORS = 1000


class ImportHandler(AdminHandler):
    @tornado.web.authenticated
    async def get(self, org_id: str) -> None:
        org = await self._org(org_id)
        self._render(org, None)

    @tornado.web.authenticated
    async def post(self, org_id: str) -> None:
        org = await self._org(org_id)
        uploads = self.request.files.get("file") or []
        if not uploads or not uploads[0]["filename"]:
            self.set_status(400)
            self._render(org, None, missing_file=True)
            return
        upload = uploads[0]
        result = await importer.import_file(self.ctx, self.actor, upload["body"], upload["filename"],
                                            target_org_id=org["_id"])
        if not result.ok:
            self.set_status(500 if result.partial else 400)
        org = await orgs.get(self.ctx, org["_id"])  # fresh counters
        self._render(org, result)

    async def _org(self, org_id: str) -> dict[str, Any]:
        org = await orgs.view(self.ctx, self.actor, org_id)
        self.actor.require("member.import", org["org_ancestors"])
        return org

    def _render(self, org: dict[str, Any], result: importer.ImportResult | None, *,
                missing_file: bool = False) -> None:
        self.render("admin/import.html", org=org, result=result, missing_file=missing_file,
                    shown=SHOWN_ERRORS, max_mb=MAX_BYTES // (1024 * 1024))


class TemplateHandler(AdminHandler):
    @tornado.web.authenticated
    def get(self) -> None:
        self.set_header("Content-Type", XLSX_TYPE)
        self.set_header("Content-Disposition", "attachment; filename=member-import-template.xlsx; "
                        "filename*=UTF-8''" + tornado.escape.url_escape(TEMPLATE_NAME, plus=False))
        self.finish(TEMPLATE_FILE.read_bytes())


ROUTES = [
    (rf"/admin/orgs/{PATH_ID}/import", ImportHandler),
    (r"/admin/import-template.xlsx", TemplateHandler),
]
