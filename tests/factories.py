"""Valid member fields for tests, with real ID-card check digits."""

from __future__ import annotations

import itertools
from datetime import date
from typing import Any

from wxbackend.idcard import make_id_card

_sequence = itertools.count(1)


def member_fields(name: str = "张三", gender: str = "男", birth: date = date(1985, 3, 14),
                  **overrides: Any) -> dict[str, Any]:
    n = next(_sequence)
    fields = {
        "name": name,
        "id_card": make_id_card("350203", birth, n % 500, gender),
        "gender": gender,
        "birth_date": birth.isoformat(),
        "ethnicity": "汉族",
        "education": "大学本科",
        "phone": f"139{n:08d}",
        "party_status": "正式党员",
        "joined_on": "2010-07-01",
        "full_on": "2011-07-01",
        "category": "在职",
    }
    fields.update(overrides)
    return fields
