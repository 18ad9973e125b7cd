"""Write templates/member-import-template.xlsx, the spreadsheet secretaries fill in.

Sheet 1 "党员信息" holds the header row the importer reads (columns from
``wxbackend.services.orgs.import_sheet.COLUMNS``), with the ID-card and phone
columns formatted as text (so Excel keeps all 18 digits), date columns as
dates, and drop-down lists for the coded columns. Sheet 2 "填写说明" explains
each column with the values allowed by ``models/enums.py``. Run after
changing a column or an enum, and commit the result::

    .venv/bin/python scripts/make_import_template.py [OUTPUT.xlsx]
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

from openpyxl.styles import Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.enums import EDUCATIONS, GENDERS, MEMBER_CATEGORIES, PARTY_STATUSES  # noqa: E402
from wxbackend import spreadsheet  # noqa: E402
from wxbackend.services.orgs.import_sheet import ALIASES, COLUMNS, REQUIRED  # noqa: E402

OUT = ROOT / "templates" / "member-import-template.xlsx"
# Rows the drop-down lists and formats cover (the importer accepts up to 20,000).
FORMAT_ROWS = 20_001
TEXT_COLUMNS = ("id_card", "phone", "org_code")
DATE_COLUMNS = ("birth_date", "joined_on", "full_on")
WIDTHS = {"id_card": 22, "phone": 15, "org_code": 14, "birth_date": 12, "joined_on": 12,
          "full_on": 12, "party_status": 11, "category": 11, "education": 12}

HELP: dict[str, str] = {
    "name": "党员姓名，不超过30个字。",
    "gender": "可不填，按身份证号码自动确定；填写时须与身份证号码一致。可选：" + "、".join(GENDERS),
    "ethnicity": "如“汉族”“回族”；不填按“汉族”。",
    "birth_date": "可不填，按身份证号码自动确定；填写时须与身份证号码一致。格式 YYYY-MM-DD。",
    "education": "可不填。可选：" + "、".join(EDUCATIONS),
    "id_card": "18位公民身份号码，末位可为X；用于识别党员：再次导入时按它更新，不会重复登记。"
               "本列须为文本格式（模板已设置），否则Excel会丢失末几位。",
    "phone": "11位手机号码，可不填。本列为文本格式。",
    "party_status": "可选：" + "、".join(PARTY_STATUSES.values()),
    "joined_on": "格式 YYYY-MM-DD（也接受 YYYY/MM/DD、YYYYMMDD）。入党时应年满18周岁，不能晚于今天。",
    "full_on": "正式党员必填，不能早于入党日期；预备党员不填。",
    "category": "可选：" + "、".join(MEMBER_CATEGORIES.values()),
    "org_code": "可不填：不填的行导入到上传时所在的党支部（命令行用 --org-code 指定）。"
                "填写时为党支部的组织编码（见组织页面），须在您的管理范围内。",
}
NOTES = [
    "每行一名党员；第1行是表头，请勿修改列名。不需要的可选列可以删除，列的顺序可以调整。",
    "整个文件全部正确才会导入；有任何一行出错，系统不做任何修改，并列出每一处错误（行号、列、原因），改正后重新导入整个文件即可。",
    "已登记的党员（身份证号码相同）会被更新为表中的信息，不会重复登记；同一文件可以放心重复导入。",
    "文件不超过10MB、20000行；也可以另存为CSV（UTF-8或GB18030编码）后导入。",
]


def write_members_sheet(book: spreadsheet.Workbook) -> None:
    # Through the one workbook writer, like every export: header text stays text.
    ws = spreadsheet.sheet(book, "党员信息", list(COLUMNS.values()), [],
                           [WIDTHS.get(code, 9) for code in COLUMNS], first=True)
    fill = PatternFill("solid", fgColor="F3EFEC")
    for i, code in enumerate(COLUMNS, start=1):
        ws.cell(row=1, column=i).fill = fill
        letter = get_column_letter(i)
        if code in TEXT_COLUMNS:
            ws.column_dimensions[letter].number_format = "@"
        elif code in DATE_COLUMNS:
            ws.column_dimensions[letter].number_format = "yyyy-mm-dd"
    _drop_downs(ws)


def _drop_downs(ws) -> None:
    lists = {"gender": GENDERS, "education": EDUCATIONS,
             "party_status": tuple(PARTY_STATUSES.values()),
             "category": tuple(MEMBER_CATEGORIES.values())}
    letters = {code: get_column_letter(i) for i, code in enumerate(COLUMNS, start=1)}
    for code, values in lists.items():
        check = DataValidation(type="list", formula1='"' + ",".join(values) + '"', allow_blank=True,
                               showErrorMessage=True, errorTitle="输入有误",
                               error="请从下拉列表中选择")
        check.add(f"{letters[code]}2:{letters[code]}{FORMAT_ROWS}")
        ws.add_data_validation(check)


def write_help_sheet(book: spreadsheet.Workbook, help_text: dict[str, str] = HELP,
                     notes: list[str] = NOTES) -> None:
    """The 填写说明 sheet; the texts are parameters so a test can feed hostile ones."""
    aliases: dict[str, list[str]] = {}
    for alias, code in ALIASES.items():
        aliases.setdefault(code, []).append(alias)
    rows: list[list[str]] = []
    for code, label in COLUMNS.items():
        required = "必填" if code in REQUIRED else "选填"
        if code == "full_on":
            required = "正式党员必填（列须保留）"
        rows.append([label, required, help_text[code], "、".join(aliases.get(code, []))])
    rows += [[], ["注意事项"], *(["", "", note] for note in notes)]
    ws = spreadsheet.sheet(book, "填写说明", ["列名", "是否必填", "填写说明", "也可识别的列名"], rows,
                           (12, 22, 80, 30), freeze=False, wrap=(1, 2, 3, 4))
    ws.cell(row=len(COLUMNS) + 3, column=1).font = Font(bold=True)  # the 注意事项 title


def build() -> spreadsheet.Workbook:
    """The template workbook, as main() saves it."""
    book = spreadsheet.new_book()
    write_members_sheet(book)
    write_help_sheet(book)
    # Fixed document times: regenerating an unchanged template changes nothing visible.
    book.properties.created = book.properties.modified = datetime(2025, 1, 1)
    book.properties.creator = "wxbackend"
    return book


def main(out: Path = OUT) -> None:
    out.write_bytes(spreadsheet.save(build()))
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
