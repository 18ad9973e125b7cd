"""三会一课 compliance: the rule itself and its periods, pure (no database, no clock).

:mod:`.compliance` counts meetings and draws pages with it, :mod:`.compliance_months`
keeps each branch-month's requirement, and the demo seed judges a year in memory
with the same functions::

    rules = Rules.from_settings(ctx.settings)
    basis = rules.basis(branch)            # {"full_members": 8, "groups": 0}
    rules.required_for(basis)["monthly"]   # ["committee", "theme_day"]
    missing_types(doc)                     # [] when the document's month is compliant
    phase_of("2026-11", "2026-12")         # "closed": judged once and for all

Reason code raised: ``bad_month`` (InvalidInput) for a month not written ``YYYY-MM``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from models.enums import MEETING_TYPES
from wxbackend.errors import InvalidInput

MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")

# Where a month stands against the clock's month (Asia/Shanghai): a closed month is
# judged for good, the running month is in progress, a future month has not begun.
CLOSED, RUNNING, FUTURE = "closed", "running", "future"


@dataclass(frozen=True)
class Rules:
    monthly: tuple[str, ...]
    quarterly: tuple[str, ...]
    yearly: tuple[str, ...]
    committee_min_full: int

    @classmethod
    def from_settings(cls, settings: Any) -> Rules:
        section = settings.meetings

        def types(text: str) -> tuple[str, ...]:
            return tuple(t.strip() for t in text.split(",") if t.strip() in MEETING_TYPES)

        return cls(types(section.compliance_monthly_types), types(section.compliance_quarterly_types),
                   types(section.compliance_yearly_types), section.compliance_committee_min_full)

    @staticmethod
    def basis(org: dict[str, Any]) -> dict[str, int]:
        """What of a branch decides its requirement: full members and 党小组 (as it is now)."""
        return {"full_members": org.get("full_member_count", 0), "groups": org.get("child_count", 0)}

    def required_for(self, basis: dict[str, int]) -> dict[str, list[str]]:
        """What a branch of this basis owes: 支委会 only with a committee, 党小组会 only with groups."""
        monthly = [t for t in self.monthly
                   if (t != "committee" or basis.get("full_members", 0) >= self.committee_min_full)
                   and (t != "group" or basis.get("groups", 0) > 0)]
        return {"monthly": monthly, "quarterly": list(self.quarterly), "yearly": list(self.yearly)}

    def required(self, org: dict[str, Any]) -> dict[str, list[str]]:
        """What the branch owes as it is now (the running month's requirement)."""
        return self.required_for(self.basis(org))


# -- periods -----------------------------------------------------------------------

def parse_month(text: str) -> str:
    if not isinstance(text, str) or not MONTH.match(text):
        raise InvalidInput("bad_month", "月份格式应为 YYYY-MM")
    return text


def quarter_of(month: str) -> str:
    return f"{month[:4]}-Q{(int(month[5:7]) - 1) // 3 + 1}"


def quarter_months(month: str) -> list[str]:
    first = (int(month[5:7]) - 1) // 3 * 3 + 1
    return [f"{month[:4]}-{m:02d}" for m in range(first, first + 3)]


def quarter_end(month: str) -> str:
    return quarter_months(month)[-1]


def year_end(month: str) -> str:
    return f"{month[:4]}-12"


def shift_month(month: str, delta: int) -> str:
    index = int(month[:4]) * 12 + int(month[5:7]) - 1 + delta
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def months_back(last: str, count: int) -> list[str]:
    """``count`` months ending with ``last``, oldest first."""
    return [shift_month(last, -i) for i in range(count - 1, -1, -1)]


def phase_of(month: str, running: str) -> str:
    return CLOSED if month < running else RUNNING if month == running else FUTURE


# -- the judgement -----------------------------------------------------------------

def missing_types(doc: dict[str, Any]) -> list[str]:
    """Types due in the document's month that were not held (empty = compliant)."""
    required = doc.get("required") or {}
    counts = doc.get("counts") or {}
    missing = [t for t in required.get("monthly", []) if counts.get(t, 0) < 1]
    month = doc["month"]
    if month == quarter_end(month):
        quarter = doc.get("quarter_counts") or {}
        missing += [t for t in required.get("quarterly", []) if quarter.get(t, 0) < 1]
    if month == year_end(month):
        year = doc.get("year_counts") or {}
        missing += [t for t in required.get("yearly", []) if year.get(t, 0) < 1]
    return missing


def attendance_rate(attended: int, expected: int, excused: int) -> float | None:
    """attended / (expected - excused); None when nobody was expected."""
    base = expected - excused
    return None if base <= 0 else min(1.0, attended / base)


def ratio(part: int, whole: int) -> float | None:
    """A compliance rate (compliant / branches); None without branches."""
    return None if whole <= 0 else min(1.0, part / whole)


def contribution(meeting: dict[str, Any]) -> list[Any] | None:
    """[type, expected, attended, excused] of a meeting that counts, else None."""
    counts = meeting.get("counts") or {}
    attended = counts.get("present", 0) + counts.get("online", 0)
    if meeting.get("status") != "finished" or attended < 1:
        return None
    return [meeting["type"], meeting.get("expected_count", 0), attended, counts.get("excused", 0)]
