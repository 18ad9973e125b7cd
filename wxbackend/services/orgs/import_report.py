"""What a member import answers: its counts, or every problem by row and column.

:mod:`.importer` fills an :class:`ImportResult` through a :class:`Report`, which
names each column as the file's own header does::

    report = Report(sheet, ImportResult("名册.xlsx"))
    report.fail(3, "id_card", "身份证号码与第5行重复", "duplicate_in_file")
    report.result.summary()   # "导入失败，未做任何修改：名册.xlsx，共1处错误：\n第3行 身份证号码：..."
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wxbackend.services.orgs.import_sheet import COLUMNS, Sheet


@dataclass(frozen=True)
class ImportIssue:
    """One problem: ``row`` as the spreadsheet shows it (None for the whole file)."""

    row: int | None
    column: str
    message: str
    code: str = "invalid_field"

    def describe(self) -> str:
        if self.row is None:
            return self.message
        return f"第{self.row}行 {self.column}：{self.message}" if self.column else f"第{self.row}行：{self.message}"


@dataclass
class ImportResult:
    filename: str
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[ImportIssue] = field(default_factory=list)
    # Errors beyond those kept in ``errors`` (a stored run keeps the first KEPT_ERRORS).
    more_errors: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors and not self.more_errors

    @property
    def error_count(self) -> int:
        return len(self.errors) + self.more_errors

    def summary(self) -> str:
        if self.ok:
            return (f"导入成功：{self.filename}，共{self.rows}行，新增{self.created}人，"
                    f"更新{self.updated}人，{self.unchanged}人信息无变化。")
        head = f"导入失败，未做任何修改：{self.filename}，共{self.error_count}处错误："
        return "\n".join([head, *(e.describe() for e in self.errors)])

    def to_doc(self, keep: int) -> dict[str, Any]:
        """What a stored run keeps: the counts and the first ``keep`` errors."""
        return {"rows": self.rows, "created": self.created, "updated": self.updated,
                "unchanged": self.unchanged, "error_count": self.error_count,
                "errors": [issue_doc(e) for e in self.errors[:keep]]}

    @classmethod
    def from_doc(cls, filename: str, doc: dict[str, Any]) -> ImportResult:
        errors = [ImportIssue(e["row"], e["column"], e["message"], e["code"]) for e in doc.get("errors", [])]
        return cls(filename, doc.get("rows", 0), doc.get("created", 0), doc.get("updated", 0),
                   doc.get("unchanged", 0), errors, max(0, doc.get("error_count", 0) - len(errors)))


def issue_doc(issue: ImportIssue) -> dict[str, Any]:
    return {"row": issue.row, "column": issue.column, "message": issue.message, "code": issue.code}


@dataclass
class Report:
    """Collects issues, naming each column as the file's header does."""

    sheet: Sheet
    result: ImportResult

    def fail(self, row: int | None, field_code: str, message: str, code: str = "invalid_field") -> None:
        column = self.sheet.columns.get(field_code) or COLUMNS.get(field_code, "")
        self.result.errors.append(ImportIssue(row, column, message, code))
