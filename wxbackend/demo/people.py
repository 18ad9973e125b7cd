"""Synthetic members of the demo city: :class:`PeopleMaker` draws, from one seeded
RNG, plausible fields (names, unique ID-card numbers and phones, birth and party
dates, education, category, state) that pass ``members.validate_fields``.
"""

from __future__ import annotations

import bisect
import random
from datetime import date, timedelta
from itertools import accumulate
from typing import Any

from wxbackend.demo.names import (
    BIRTH_FIRST,
    BIRTH_LAST,
    BIRTH_MODE,
    DISTRICTS,
    EDU_BY_DECADE,
    EDU_LEVELS,
    ETHNICITIES,
    FEMALE_CHARS,
    MALE_CHARS,
    MALE_SHARE,
    OLD_FEMALE,
    OLD_MALE,
    PHONE_SECOND,
    SURNAMES,
)
from wxbackend.errors import DomainError
from wxbackend.idcard import make_id_card


def add_years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February: the birthday is taken to be 1 March
        return date(day.year + years, 3, 1)


def age_on(birth: date, today: date) -> int:
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def _cumulative(pairs: list[tuple[str, float]]) -> tuple[list[str], list[float]]:
    return [p for p, _ in pairs], list(accumulate(w for _, w in pairs))


class PeopleMaker:
    """Plausible members whose fields pass ``members.validate_fields``."""

    def __init__(self, rng: random.Random, today: date) -> None:
        self.rng = rng
        self.today = today
        self.cards: set[str] = set()
        self.phones: set[str] = set()
        self.surnames = _cumulative(SURNAMES)
        self.ethnicities = _cumulative(ETHNICITIES)
        self.regions = [region for _, _, region, _ in DISTRICTS]

    def pick(self, table: tuple[list[str], list[float]]) -> str:
        values, cumulative = table
        return values[bisect.bisect(cumulative, self.rng.random() * cumulative[-1])]

    def person(self, category: str, region: str) -> tuple[dict[str, Any], str]:
        """(clean fields as validate_fields returns them, state)."""
        rng = self.rng
        gender = "男" if rng.random() < MALE_SHARE[category] else "女"
        birth = self.birth(category)
        age = age_on(birth, self.today)
        status, joined, full = self.party_dates(birth, age)
        clean = {
            "name": self.pick(self.surnames) + self.given(gender, birth.year),
            "id_card": self.id_card(region or rng.choice(self.regions), birth, gender),
            "birth_date": birth.isoformat(), "gender": gender,
            "ethnicity": self.pick(self.ethnicities), "education": self.education(birth, category),
            "phone": self.phone(age), "party_status": status,
            "category": self.member_category(category, age),
            "joined_on": joined.isoformat(), "full_on": full.isoformat() if full else None,
        }
        return clean, self.state(age)

    def birth(self, category: str) -> date:
        rng = self.rng
        if category == "school" and rng.random() < 0.2:  # students
            first = date(2002, 1, 1)
            return first + timedelta(days=int(rng.triangular(0, (BIRTH_LAST - first).days, 1000)))
        span = (BIRTH_LAST - BIRTH_FIRST).days
        mode = (date(BIRTH_MODE[category], 7, 1) - BIRTH_FIRST).days
        return BIRTH_FIRST + timedelta(days=int(rng.triangular(0, span, mode)))

    def given(self, gender: str, year: int) -> str:
        rng = self.rng
        if year < 1960 and rng.random() < 0.35:
            return rng.choice(OLD_MALE if gender == "男" else OLD_FEMALE)
        chars = MALE_CHARS if gender == "男" else FEMALE_CHARS
        if rng.random() < 0.3:
            return rng.choice(chars)
        return rng.choice(chars) + rng.choice(chars)

    def education(self, birth: date, category: str) -> str:
        decade = min(2000, max(1930, birth.year // 10 * 10 - (10 if category == "rural" else 0)))
        weights = EDU_BY_DECADE[decade]
        return self.rng.choices(EDU_LEVELS, weights=weights)[0]

    def id_card(self, region: str, birth: date, gender: str) -> str:
        sequence = self.rng.randrange(500)
        for step in range(500):
            card = make_id_card(region, birth, (sequence + step) % 500, gender)
            if card not in self.cards:
                self.cards.add(card)
                return card
        raise DomainError("seed_id_cards", "同一出生日期的身份证号码已用尽")  # never at 1.0

    def phone(self, age: int) -> str | None:
        rng = self.rng
        if rng.random() < (0.3 if age >= 80 else 0.01):
            return None
        while True:
            phone = f"1{rng.choice(PHONE_SECOND)}{rng.randrange(10 ** 9):09d}"
            if phone not in self.phones:
                self.phones.add(phone)
                return phone

    def party_dates(self, birth: date, age: int) -> tuple[str, date, date | None]:
        rng, today = self.rng, self.today
        probation = 0.13 if age < 35 else 0.035 if age < 50 else 0.008  # ~3% overall
        if rng.random() < probation:
            return "probationary", today - timedelta(days=rng.randint(1, 360)), None
        earliest = add_years(birth, 18)
        latest = add_years(today, -1) - timedelta(days=1)
        joined = earliest + timedelta(days=int(rng.gammavariate(2.0, 4.0) * 365.25))
        if joined > latest:
            joined = earliest + timedelta(days=rng.randint(0, (latest - earliest).days))
        return "full", joined, add_years(joined, 1)

    def member_category(self, category: str, age: int) -> str:
        r = self.rng.random()
        if age >= 60:
            if category == "rural" and r < 0.6:
                return "farmer"
            return "retired" if r < 0.97 else "other"
        if age <= 22:
            return "student"
        if category == "rural":
            return "farmer" if r < 0.65 else "employed" if r < 0.85 else "mobile" if r < 0.93 else "other"
        if category == "mobile":
            return "mobile" if r < 0.9 else "employed"
        if category == "community":
            return "employed" if r < 0.55 else "unemployed" if r < 0.7 else "mobile" if r < 0.8 else "other"
        return "employed" if r < 0.95 else "other" if r < 0.98 else "mobile"

    def state(self, age: int) -> str:
        r = self.rng.random()
        if r < 0.0008:
            return "deceased" if age >= 70 else "transferred_out"
        if r < 0.0013:
            return "transferred_out"
        return "stopped" if r < 0.0015 else "active"
