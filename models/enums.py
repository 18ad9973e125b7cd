"""Codes stored in documents and their Chinese labels.

Documents store the English code; pages, replies and spreadsheets show the
label. ``parse_label`` turns a label from an imported spreadsheet back into
the code.
"""

from __future__ import annotations

ORG_TYPES = {
    "committee": "党委",
    "general_branch": "党总支",
    "branch": "党支部",
    "group": "党小组",
}
# Which types may sit directly under which (the root committee has no parent).
ORG_PARENT_TYPES = {
    "committee": ("committee",),
    "general_branch": ("committee",),
    "branch": ("committee", "general_branch"),
    "group": ("branch",),
}
ORG_CATEGORIES = {
    "organ": "机关",
    "institution": "事业单位",
    "soe": "国有企业",
    "private": "非公企业",
    "social": "社会组织",
    "school": "学校",
    "rural": "农村",
    "community": "社区",
    "mobile": "流动党员",
}
ORG_STATUSES = {"active": "正常", "dissolved": "已撤销"}

PARTY_STATUSES = {"probationary": "预备党员", "full": "正式党员"}
MEMBER_CATEGORIES = {
    "employed": "在职",
    "retired": "离退休",
    "student": "学生",
    "farmer": "农民",
    "unemployed": "下岗失业",
    "mobile": "流动",
    "other": "其他",
}
MEMBER_STATES = {
    "active": "正常",
    "transferred_out": "已转出",
    "deceased": "已去世",
    "stopped": "停止党籍",
}
GENDERS = ("男", "女")
EDUCATIONS = ("研究生", "大学本科", "大学专科", "中专", "高中", "初中", "小学及以下")

# 三会一课 and other organisational-life meetings (docs/MEETINGS-DESIGN.md).
MEETING_TYPES = {
    "branch_assembly": "支部党员大会",
    "committee": "支委会",
    "group": "党小组会",
    "lecture": "党课",
    "theme_day": "主题党日",
    "life_meeting": "组织生活会",
    "other": "其他",
}
MEETING_STATUSES = {
    "draft": "草稿",
    "planned": "已发布",
    "in_progress": "进行中",
    "finished": "已结束",
    "cancelled": "已取消",
}

ROLES = {
    "city_admin": "市级管理员",
    "committee_admin": "党委管理员",
    "secretary": "支部书记",
    "auditor": "审计员（只读）",
}


def parse_label(table: dict[str, str], text: str) -> str | None:
    """Accept either the code or the Chinese label; None when neither."""
    text = text.strip()
    if text in table:
        return text
    for code, label in table.items():
        if label == text:
            return code
    return None


def term_years_for(org_type: str, category: str) -> int:
    """Default term (中办《关于党的基层组织任期的意见》2018)."""
    if org_type == "committee":
        return 5
    if category in ("rural", "community"):
        return 5
    return 3
