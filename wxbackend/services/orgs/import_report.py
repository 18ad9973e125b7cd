"""What a member import answers: its counts, or every problem by row and column.

:mod:`.importer` fills an :class:`ImportResult` through a :class:`Report`, which
names each column as the file's own header does::

    report = Report(sheet, ImportResult("名册.xlsx"))
    report.fail(3, "id_card", "身份证号码与第5行重复", "duplicate_in_file")
    report.result.summary()   # "导入失败，未做任何修改：名册.xlsx，共1处错误：\n第3行 身份证号码：..."
"""

from __future__ import annotations

from dataclasses import dataclass, field

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

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def partial(self) -> bool:
        """The write failed halfway: some members were written, the rest not."""
        return any(e.code == "import_partial" for e in self.errors)

    def summary(self) -> str:
        if self.ok:
            return (f"导入成功：{self.filename}，共{self.rows}行，新增{self.created}人，"
                    f"更新{self.updated}人，{self.unchanged}人信息无变化。")
        if self.partial:
            head = f"导入中途失败：{self.filename}，已新增{self.created}人、更新{self.updated}人，其余未写入。"
        else:
            head = f"导入失败，未做任何修改：{self.filename}，共{len(self.errors)}处错误："
        return "\n".join([head, *(e.describe() for e in self.errors)])



@dataclass
class Report:
    """Collects issues, naming each column as the file's header does."""

    sheet: Sheet
    result: ImportResult

    def fail(self, row: int | None, field_code: str, message: str, code: str = "invalid_field") -> None:
        column = self.sheet.columns.get(field_code) or COLUMNS.get(field_code, "")
        self.result.errors.append(ImportIssue(row, column, message, code))


