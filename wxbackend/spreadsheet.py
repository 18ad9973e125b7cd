"""Every workbook the platform writes goes through here, so that text stays text.

Cells of an export hold what people typed: a member's leave reason, a meeting's
title, a material's file name, minutes. openpyxl stores any string starting
with ``=`` as a *formula*, and Excel, WPS and LibreOffice also treat ``+``,
``-`` and ``@`` as the start of one when a cell is edited or the sheet travels
as CSV. A leave reason ``=HYPERLINK("http://evil/","x")`` would then reach the
committee as a live link (or worse, a DDE call). So every value goes through
:func:`cell_value`: numbers, dates and booleans stay what they are; text that a
spreadsheet could read as a formula gets the ``'`` prefix OWASP recommends
(CSV injection cheat sheet) and is written as a string cell, readable as typed::

    book = new_book()
    sheet(book, "出勤明细", ["党员", "请假事由", "人数"],
          [["张三", '=HYPERLINK("http://evil/","x")', 3]], [12, 30, 6], first=True)
    data = save(book)          # B2 holds the text '=HYPERLINK("http://evil/","x")

A module that writes a workbook imports this one and no ``openpyxl.Workbook``
(tests/test_exports.py checks the source tree for that).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Alignment, Font
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from wxbackend.clock import SHANGHAI

# OWASP's list (= + - @ tab CR). The full-width forms, which Chinese input
# methods type, are prefixed too: cheap insurance against a spreadsheet program
# that folds them to ASCII when a cell is edited.
FORMULA_START = frozenset("=+-@\t\r＝＋－＠")
# What Excel holds in one cell; a longer string makes it "repair" the file.
MAX_CELL_CHARS = 32_767
_PLAIN = (bool, int, float, Decimal, datetime, date, time, timedelta)


def cell_text(value: str) -> str:
    """Text as a spreadsheet shows it and never runs it.

    ``'=1+1'`` -> ``"'=1+1"``; leading blanks do not hide a formula
    (``" \\n=1+1"`` is prefixed too). Control characters XML cannot carry are
    dropped: openpyxl refuses them, and one in a leave reason would otherwise
    make the whole ledger export fail.
    """
    text = ILLEGAL_CHARACTERS_RE.sub("", value)
    stripped = text.lstrip(" \n\u3000\xa0")
    if text[:1] in FORMULA_START or stripped[:1] in FORMULA_START:
        text = "'" + text
    return text[:MAX_CELL_CHARS]


def cell_value(value: Any) -> Any:
    """What to put in a cell: numbers, dates and booleans as such, anything else as safe text."""
    if value is None:
        return None
    if isinstance(value, datetime) and value.tzinfo is not None:
        # Excel has no time zones; the platform shows every instant in Shanghai.
        return value.astimezone(SHANGHAI).replace(tzinfo=None)
    if isinstance(value, _PLAIN):
        return value
    return cell_text(value if isinstance(value, str) else str(value))


def new_book() -> Workbook:
    """An empty workbook; its first sheet is the one ``sheet(..., first=True)`` fills."""
    return Workbook()


def sheet(book: Workbook, title: str, header: Sequence[Any], rows: Iterable[Sequence[Any]],
          widths: Sequence[float], *, first: bool = False, freeze: bool = True,
          wrap: Sequence[int] = ()) -> Worksheet:
    """A sheet: bold header row, then ``rows``, every value through :func:`cell_value`.

    ``widths`` are column widths in characters; ``wrap`` lists the (1-based)
    columns whose data cells wrap, top-aligned (minutes, long help text).
    """
    ws = book.active if first else book.create_sheet()
    ws.title = title
    ws.append([cell_value(v) for v in header])
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for row in rows:
        ws.append([cell_value(v) for v in row])
    for i, width in enumerate(widths, start=1):
        ws.column_dimensions[get_column_letter(i)].width = width
    for column in wrap:
        for (cell,) in ws.iter_rows(min_row=2, min_col=column, max_col=column):
            cell.alignment = Alignment(wrap_text=True, vertical="top")
    if freeze:
        ws.freeze_panes = "A2"
    return ws


def save(book: Workbook) -> bytes:
    """The workbook as .xlsx bytes."""
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
