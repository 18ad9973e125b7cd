"""Reading the member spreadsheet (.xlsx or .csv) into rows of text, before any rule.

Secretaries keep one row a member under Chinese column headers (see
``templates/IMPORT.md``). This module finds the header row, maps headers (and
their common aliases) to the field codes of
:func:`wxbackend.services.orgs.members.validate_fields`, and turns each cell into
stripped text, keeping the row number the spreadsheet shows (header = row 1)::

    sheet = read_sheet(data, "名册.xlsx")      # raises InvalidInput for a bad file
    for number, fields in sheet.rows:
        print(number, fields["name"], fields.get("org_code", ""))

It checks the file, not the members: rules live in ``members.validate_fields``
and in :mod:`wxbackend.services.orgs.importer`.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import PurePath
from typing import Any

import openpyxl

from wxbackend.errors import InvalidInput
from wxbackend.services.orgs.members import FIELD_LABELS

MAX_BYTES = 10 * 1024 * 1024
MAX_ROWS = 20_000
# Physical rows read, blank ones included: a stray cell far down the sheet makes
# the reader produce every empty row above it.
MAX_SCANNED_ROWS = 2 * MAX_ROWS
# What an .xlsx (a zip) may expand to; a 10 MB file of real data stays far below.
MAX_UNZIPPED_BYTES = 200 * 1024 * 1024
# The header may sit under a title row or two ("某某支部党员名册").
HEADER_SCAN_ROWS = 5
# Columns read from a sheet; anything to the right is ignored.
MAX_COLUMNS = 60

ORG_CODE = "org_code"
# Field code -> the header the template writes, in template order.
COLUMNS: dict[str, str] = {
    "name": FIELD_LABELS["name"], "gender": FIELD_LABELS["gender"],
    "ethnicity": FIELD_LABELS["ethnicity"], "birth_date": FIELD_LABELS["birth_date"],
    "education": FIELD_LABELS["education"], "id_card": FIELD_LABELS["id_card"],
    "phone": FIELD_LABELS["phone"], "party_status": FIELD_LABELS["party_status"],
    "joined_on": FIELD_LABELS["joined_on"], "full_on": FIELD_LABELS["full_on"],
    "category": FIELD_LABELS["category"], ORG_CODE: "党组织编码",
}
# Other headers secretaries' own sheets use for the same columns.
ALIASES: dict[str, str] = {
    "文化程度": "education",
    "身份证号": "id_card", "身份证": "id_card", "公民身份号码": "id_card", "公民身份证号码": "id_card",
    "手机": "phone", "手机号": "phone", "联系电话": "phone", "联系方式": "phone",
    "党籍状态": "party_status", "入党时间": "joined_on", "转正时间": "full_on",
    "组织编码": ORG_CODE, "所在党组织编码": ORG_CODE, "党支部编码": ORG_CODE,
}
HEADERS: dict[str, str] = {**{label: code for code, label in COLUMNS.items()}, **ALIASES}
# Columns a file must have; the others may be absent (validate_fields decides per row).
REQUIRED = ("name", "id_card", "party_status", "joined_on", "full_on", "category")

NUMERIC_ID_CARD = "身份证号码被存成了数字，末几位可能已丢失：请将身份证号码列设置为文本格式后重新填写"
_SCIENTIFIC = re.compile(r"^\d+(\.\d+)?[eE]\+?\d+$")
_NOTE = re.compile(r"[（(][^）)]*[）)]$")
_BLANKS = str.maketrans("", "", " \t\r\n\u3000\xa0*＊")


@dataclass(frozen=True)
class CellIssue:
    """A cell that cannot be read as the text it was meant to be."""

    row: int
    field: str
    message: str


@dataclass
class Sheet:
    columns: dict[str, str]  # field code -> header as written in the file
    rows: list[tuple[int, dict[str, str]]]  # (row number as shown, field code -> text)
    issues: list[CellIssue] = field(default_factory=list)


def read_sheet(data: bytes, filename: str) -> Sheet:
    """Rows of a .xlsx or .csv file, or InvalidInput with a code and a Chinese message."""
    if len(data) > MAX_BYTES:
        raise InvalidInput("import_too_large", "文件超过10MB，请分成几个文件分别导入")
    if not data:
        raise InvalidInput("import_empty", "文件是空的，没有可导入的数据")
    suffix = PurePath(filename or "").suffix.lower()
    if suffix == ".xlsx":
        return _read_xlsx(data)
    if suffix == ".csv":
        return _from_table(_csv_table(data))
    if suffix == ".xls":
        raise InvalidInput("import_file_type", "不支持旧版 .xls 文件，请在 Excel 中另存为 .xlsx 后再导入")
    raise InvalidInput("import_file_type", "只能导入 .xlsx 或 .csv 文件")


# -- file formats ---------------------------------------------------------------

def _read_xlsx(data: bytes) -> Sheet:
    unreadable = InvalidInput("import_unreadable",
                              "文件无法读取：可能已损坏、设有打开密码或不是 Excel 文件，请用 Excel 另存为 .xlsx 后重试")
    # Untrusted files make the zip and XML libraries fail in many ways (BadZipFile,
    # KeyError, ParseError, ...); each means the same to the secretary.
    try:
        _check_unzipped_size(data)
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except InvalidInput:
        raise
    except Exception as exc:
        raise unreadable from exc
    try:
        return _first_sheet_with_header(book)
    except InvalidInput:
        raise
    except Exception as exc:
        raise unreadable from exc
    finally:
        book.close()


def _check_unzipped_size(data: bytes) -> None:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        if sum(info.file_size for info in archive.infolist()) > MAX_UNZIPPED_BYTES:
            raise InvalidInput("import_too_large", "文件内容过大，请删除多余的工作表、图片或空行，或分成几个文件分别导入")


def _first_sheet_with_header(book: Any) -> Sheet:
    """The first worksheet whose top rows hold the headers (skips a 填写说明 sheet)."""
    first_error: InvalidInput | None = None
    for ws in book.worksheets:
        ws.reset_dimensions()  # some writers record wrong dimensions
        rows = ws.iter_rows(min_row=1, max_col=MAX_COLUMNS, values_only=True)
        try:
            return _from_table(enumerate(rows, start=1))
        except InvalidInput as exc:
            if exc.code not in ("import_headers", "import_empty"):
                raise
            first_error = first_error or exc
    raise first_error or InvalidInput("import_empty", "文件中没有工作表")


def _csv_table(data: bytes) -> Iterator[tuple[int, tuple[Any, ...]]]:
    text = _decode(data)
    try:
        records = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise InvalidInput("import_unreadable", "CSV 文件格式有误，无法读取") from exc
    return enumerate((tuple(r[:MAX_COLUMNS]) for r in records), start=1)


def _decode(data: bytes) -> str:
    """UTF-8 (with or without BOM), else GB18030, which Chinese Excel uses for CSV."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for encoding in ("utf-8", "gb18030"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if "\x00" not in text:
            return text
    raise InvalidInput("import_unreadable", "无法识别 CSV 文件的编码，请另存为“CSV UTF-8”格式后重试")


# -- header and rows ------------------------------------------------------------

def _from_table(table: Iterable[tuple[int, tuple[Any, ...]]]) -> Sheet:
    table = iter(table)
    top = [next(table, None) for _ in range(HEADER_SCAN_ROWS)]
    top = [t for t in top if t is not None]
    if not any(_text(v) for _, values in top for v in values):
        raise InvalidInput("import_empty", "文件是空的，没有可导入的数据")
    header_at, positions, columns = _find_header(top)
    sheet = Sheet(columns, [])
    data_rows = [t for t in top if t[0] > header_at]
    for number, values in _chain(data_rows, table):
        if number > MAX_SCANNED_ROWS:
            raise InvalidInput("import_too_many_rows", f"文件超过{MAX_SCANNED_ROWS}行（含空行）："
                               "请删除表格下方多余的行，或分成几个文件分别导入")
        fields = _row_fields(sheet, number, values, positions)
        if fields is None:
            continue
        if len(sheet.rows) >= MAX_ROWS:
            raise InvalidInput("import_too_many_rows",
                               f"文件超过{MAX_ROWS}行党员数据，请分成几个文件分别导入")
        sheet.rows.append((number, fields))
    if not sheet.rows:
        raise InvalidInput("import_no_rows", "文件只有表头，没有党员数据")
    return sheet


def _chain(first: list, rest: Iterator) -> Iterator:
    yield from first
    yield from rest


def header_key(value: Any) -> str:
    """``" 身份证号码（必填）*"`` -> ``"身份证号码"``: spaces, stars and notes dropped."""
    text = str(value or "").translate(_BLANKS)
    return _NOTE.sub("", text)


def _find_header(top: list[tuple[int, tuple[Any, ...]]]) -> tuple[int, dict[int, str], dict[str, str]]:
    """The top row naming the most known columns; InvalidInput when required ones are missing."""
    best: tuple[int, dict[int, str], dict[str, str]] = (0, {}, {})
    for number, values in top:
        positions: dict[int, str] = {}
        columns: dict[str, str] = {}
        for i, value in enumerate(values):
            code = HEADERS.get(header_key(value))
            if code is None:
                continue
            if code in columns:
                raise InvalidInput("import_headers", f"第{number}行表头中“{columns[code]}”和"
                                   f"“{_text(value)}”是同一列，请删去一列")
            positions[i], columns[code] = code, _text(value)
        if len(columns) > len(best[2]):
            best = (number, positions, columns)
    missing = [COLUMNS[c] for c in REQUIRED if c not in best[2]]
    if missing:
        raise InvalidInput("import_headers", "缺少必填列：" + "、".join(missing)
                           + "。表头应写在第1行，列名见导入模板")
    return best


def _row_fields(sheet: Sheet, number: int, values: tuple[Any, ...],
                positions: dict[int, str]) -> dict[str, str] | None:
    """Text of each known column; None for a blank row."""
    fields: dict[str, str] = {}
    for i, code in positions.items():
        value = values[i] if i < len(values) else None
        text, problem = _cell(code, value)
        if problem:
            sheet.issues.append(CellIssue(number, code, problem))
        fields[code] = text
    return fields if any(fields.values()) else None


def _cell(code: str, value: Any) -> tuple[str, str | None]:
    """A cell as text, and a problem when the value cannot be trusted."""
    if isinstance(value, bool):
        return str(value), None
    if isinstance(value, int | float):
        if code == "id_card":
            return str(value), NUMERIC_ID_CARD
        return (str(int(value)) if float(value).is_integer() else str(value)), None
    if isinstance(value, datetime):
        return value.date().isoformat(), None
    if isinstance(value, date):
        return value.isoformat(), None
    text = _text(value)
    if code in ("id_card", "phone"):
        text = _unquote(text)
        if code == "id_card" and _SCIENTIFIC.match(text):
            return text, NUMERIC_ID_CARD
    return text, None


def _text(value: Any) -> str:
    return str(value).replace("\u3000", " ").replace("\xa0", " ").strip() if value is not None else ""


def _unquote(text: str) -> str:
    """CSV tricks for keeping digits as text: ``'3502...`` and ``="3502..."``."""
    if text.startswith('="') and text.endswith('"'):
        return text[2:-1].strip()
    return text.lstrip("'").strip()
