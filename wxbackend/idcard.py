"""Resident ID-card numbers (GB 11643-1999): 18 characters with a check digit.

The number carries the birth date (characters 7-14) and the sex (the 17th
character is odd for men, even for women), so a member record can be checked
against it::

    parsed = parse_id_card("11010519491231002X", today=date(2026, 1, 1))
    parsed.birth_date, parsed.gender   # date(1949, 12, 31), "女"
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from wxbackend.errors import InvalidInput

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
_FORMAT = re.compile(r"^\d{17}[\dX]$")


@dataclass(frozen=True)
class IdCard:
    number: str
    birth_date: date
    gender: str  # "男" or "女"


def check_digit(first17: str) -> str:
    return _CHECK[sum(int(c) * w for c, w in zip(first17, _WEIGHTS, strict=True)) % 11]


def normalise_id_card(raw: str) -> str:
    return raw.strip().upper().replace(" ", "")


def parse_id_card(raw: str, *, today: date) -> IdCard:
    """Validate format, birth date (not after ``today``) and check digit, or raise InvalidInput."""
    number = normalise_id_card(raw)
    if not _FORMAT.match(number):
        raise InvalidInput("id_card_format", "身份证号码应为18位，前17位为数字，末位为数字或X")
    try:
        birth = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        raise InvalidInput("id_card_birth_date", "身份证号码中的出生日期无效") from None
    if birth > today or birth.year < 1900:
        raise InvalidInput("id_card_birth_date", "身份证号码中的出生日期无效")
    if check_digit(number[:17]) != number[17]:
        raise InvalidInput("id_card_check_digit", "身份证号码校验位错误")
    gender = "男" if int(number[16]) % 2 == 1 else "女"
    return IdCard(number, birth, gender)


def make_id_card(region: str, birth: date, sequence: int, gender: str) -> str:
    """Build a valid number (seed data). ``sequence`` 0-499 picks the order code."""
    order = sequence * 2 + (1 if gender == "男" else 0)
    first17 = f"{region}{birth:%Y%m%d}{order:03d}"
    return first17 + check_digit(first17)
