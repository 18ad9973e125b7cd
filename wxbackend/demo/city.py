"""The organisation tree of the demo city, planned before anything is stored: how
many organisations of each kind and members a scale gives, the tree itself (names,
categories, terms of office, branch sizes, 党小组) decided by one seeded RNG, and the
codes and organisation documents of its nodes (:func:`plan_city`, :func:`walk`).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as time_of_day
from typing import Any

from wxbackend.clock import SHANGHAI
from wxbackend.demo.names import (
    AREAS,
    CITY_DEPTS,
    DEPARTMENTS,
    DISTRICTS,
    FIRMS,
    INDUSTRIES,
    PLACES,
    SOCIAL,
    TOP_DEPTS,
)
from wxbackend.errors import DomainError
from wxbackend.services import orgs

SEED = 20260101
CITY = "鹭城"
ROOT_NAME = "中共鹭城市委员会"
ROOT_CODE = "LC"
# Organisations of each kind and members at scale 1.0; the minimum keeps a tiny
# city a real tree (root > district > committee > general branch > branches).
FULL_SHAPE = {"district": (6, 1), "industry": (8, 1), "base": (350, 1), "general": (900, 1),
              "branch": (12_285, 4), "group": (450, 1)}
FULL_MEMBERS = 219_000
BIG_BRANCH = 1200          # one branch this large: check-in of a 1,000-member meeting
EXPIRED_SHARE = 0.08       # organisations whose term has run out


def scaled_counts(scale: float) -> dict[str, int]:
    """How many organisations of each kind, and members, a scale gives."""
    if not 0 < scale <= 2:
        raise DomainError("bad_scale", "规模应在0到2之间（1.0为全市规模）")
    counts = {k: max(low, round(n * scale)) for k, (n, low) in FULL_SHAPE.items()}
    counts["district"] = min(counts["district"], len(DISTRICTS))
    counts["industry"] = min(counts["industry"], len(INDUSTRIES))
    counts["members"] = max(60, round(FULL_MEMBERS * scale))
    return counts


# -- the tree ------------------------------------------------------------------------

@dataclass
class Spec:
    """One organisation of the plan, before it becomes a document."""

    kind: str                 # root | top | base | general | branch | group
    org_type: str
    category: str
    name: str
    parent: Spec | None
    top: Spec | None
    unit: str = ""            # name stem children derive theirs from
    base_kind: str = ""       # street, town, ... (how children are named)
    term_days_ago: int | None = None
    size: int = 0             # members (branches only)
    children: list[Spec] = field(default_factory=list)
    code: str = ""
    doc: dict[str, Any] | None = None
    region: str = ""          # ID-card region code of its members
    child_category: str = ""  # tops: category of the units directly under them
    counters: Counter = field(default_factory=Counter)

    def add(self, child: Spec) -> Spec:
        self.children.append(child)
        return child


def cn(n: int) -> str:
    """Chinese numeral for 1-99 (第三, 第十二)."""
    digits = "零一二三四五六七八九"
    if n < 10:
        return digits[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return ("" if tens == 1 else digits[tens]) + "十" + (digits[ones] if ones else "")
    return str(n)


def apportion(total: int, weights: list[float]) -> list[int]:
    """Largest-remainder split of ``total`` by ``weights``."""
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    shares = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in order[:total - sum(shares)]:
        shares[i] += 1
    return shares


class CityPlanner:
    """Decides the tree (names, categories, terms, branch sizes) with one RNG."""

    def __init__(self, rng: random.Random, counts: dict[str, int]) -> None:
        self.rng = rng
        self.counts = counts
        self.root = Spec("root", "committee", "organ", ROOT_NAME, None, None, unit="鹭城市",
                         term_days_ago=rng.randint(200, 1500))
        self.branches: list[Spec] = []

    def place(self) -> str:
        return self.rng.choice(PLACES)

    def term(self, years: int) -> int:
        if self.rng.random() < EXPIRED_SHARE:
            return years * 366 + self.rng.randint(20, 700)
        return self.rng.randint(15, years * 365 - 15)

    def plan(self) -> Spec:
        tops = self._tops()
        weights = [w for _, w in tops]
        quotas = {k: apportion(self.counts[k], weights) for k in ("base", "general", "branch")}
        for i, (top, _) in enumerate(tops):
            bases = [self._base(top) for _ in range(quotas["base"][i])]
            generals = [self._general(top, bases) for _ in range(quotas["general"][i])]
            self._branches(top, bases, generals, quotas["branch"][i])
        sizes = BranchSizer(self.rng, self.counts["members"]).sizes(self.branches)
        for branch, size in zip(self.branches, sizes, strict=True):
            branch.size = size
        self._groups()
        return self.root

    def _tops(self) -> list[tuple[Spec, float]]:
        tops = []
        for code, name, region, weight in DISTRICTS[:self.counts["district"]]:
            spec = Spec("top", "committee", "organ", f"中共鹭城市{name}委员会", self.root, None,
                        unit=name, base_kind="district", code=code, region=region,
                        child_category="organ", term_days_ago=self.rng.randint(100, 1600))
            tops.append((self.root.add(spec), weight))
        for code, name, short, kind, category, weight in INDUSTRIES[:self.counts["industry"]]:
            spec = Spec("top", "committee", "organ", name, self.root, None, unit=short.removesuffix("党委"),
                        base_kind=kind, code=code, child_category=category,
                        term_days_ago=self.rng.randint(100, 1600))
            tops.append((self.root.add(spec), weight))
        for top, _ in tops:
            top.top = top
        return tops

    def _base(self, top: Spec) -> Spec:
        kind, unit, category = self._base_unit(top)
        suffix = "党工委" if kind == "street" else "党委"
        spec = Spec("base", "committee", category, f"{unit}{suffix}", top, top, unit=unit,
                    base_kind=kind, term_days_ago=self.term(5))
        return top.add(spec)

    def _base_unit(self, top: Spec) -> tuple[str, str, str]:
        """(kind, unit name, category) of a 基层党委 under ``top``."""
        rng, place, kind = self.rng, self.place(), top.base_kind
        if kind == "district":
            r = rng.random()
            if r < 0.35:
                return "street", f"{top.unit}{place}街道", "community"
            if r < 0.6:
                return "town", f"{top.unit}{place}镇", "rural"
            if r < 0.7:
                return "unit", f"{top.unit}{rng.choice(CITY_DEPTS)}机关", "organ"
            if r < 0.9:
                return "unit", f"{place}{rng.choice(FIRMS)}有限公司", "private"
            return "unit", f"{top.unit}{place}建设发展集团", "soe"
        return "unit", *self._industry_unit(kind, place)

    def _industry_unit(self, kind: str, place: str) -> tuple[str, str]:
        rng = self.rng
        if kind == "organ_dept":
            return f"鹭城市{rng.choice(CITY_DEPTS)}机关", "organ"
        if kind == "soe":
            return f"鹭城{place}{rng.choice(('集团有限公司', '控股集团', '投资集团', '建设集团'))}", "soe"
        if kind == "school":
            pick = rng.random()
            if pick < 0.6:
                return f"鹭城第{cn(rng.randint(1, 40))}中学", "school"
            if pick < 0.85:
                return f"鹭城{place}小学", "school"
            return f"鹭城{place}职业技术学院", "school"
        if kind == "health":
            if self.rng.random() < 0.5:
                return f"鹭城市第{cn(rng.randint(1, 12))}医院", "institution"
            return f"鹭城市{place}医院", "institution"
        if kind == "twonew":
            if rng.random() < 0.7:
                return f"{place}{rng.choice(FIRMS)}有限公司", "private"
            return f"鹭城市{place}{rng.choice(SOCIAL)}", "social"
        if kind == "police":
            return f"鹭城市公安局{place}分局", "organ"
        if kind == "transport":
            return f"鹭城{place}{rng.choice(('公交', '地铁', '港务', '客运'))}公司", "soe"
        return f"鹭城{place}{rng.choice(('农村商业银行', '证券', '保险', '银行支行'))}", "soe"

    def _general(self, top: Spec, bases: list[Spec]) -> Spec:
        parent = self.rng.choice(bases) if bases and self.rng.random() < 0.88 else top
        if parent.base_kind == "street":
            unit, category = f"{self.place()}社区", "community"
        elif parent.base_kind == "town":
            unit, category = f"{self.place()}村", "rural"
        else:
            category = parent.child_category or parent.category
            n = sum(1 for c in parent.children if c.kind == "general")
            depts = DEPARTMENTS.get(category, DEPARTMENTS["organ"])
            area = AREAS[(n // len(depts) - 1) % len(AREAS)] if n >= len(depts) else ""
            unit = parent.unit + area + depts[n % len(depts)]
        spec = Spec("general", "general_branch", category, f"{unit}党总支", parent, top, unit=unit,
                    term_days_ago=self.term(5 if category in ("rural", "community") else 3))
        return parent.add(spec)

    def _branches(self, top: Spec, bases: list[Spec], generals: list[Spec], n: int) -> None:
        parents = [g for g in generals for _ in range(2)] + bases
        rng = self.rng
        while len(parents) < n:
            r = rng.random()
            if generals and r < 0.4:
                parents.append(rng.choice(generals))
            elif bases and r < 0.95:
                parents.append(rng.choice(bases))
            else:
                parents.append(top)
        for parent in parents[:n]:
            self.branches.append(self._branch(top, parent))

    def _branch(self, top: Spec, parent: Spec) -> Spec:
        name, category = self._branch_name(parent)
        spec = Spec("branch", "branch", category, name, parent, top,
                    term_days_ago=self.term(5 if category in ("rural", "community") else 3))
        return parent.add(spec)

    def _branch_name(self, parent: Spec) -> tuple[str, str]:
        rng, k = self.rng, sum(1 for c in parent.children if c.kind == "branch") + 1
        if parent.kind == "general":
            return f"{parent.unit}第{cn(k)}党支部", parent.category
        if parent.kind == "top":
            if parent.base_kind == "district" and k <= len(TOP_DEPTS):
                return f"{parent.unit}委{TOP_DEPTS[k - 1]}党支部", "organ"
            return f"{parent.unit}直属第{cn(k)}党支部", parent.child_category
        r = rng.random()
        if parent.base_kind == "street":
            if r < 0.8:
                return f"{self.place()}社区党支部", "community"
            if r < 0.88:
                return f"{parent.unit}机关第{cn(k)}党支部", "organ"
            if r < 0.95:
                return f"{self.place()}{rng.choice(FIRMS)}有限公司党支部", "private"
            return f"{self.place()}社区流动党员党支部", "mobile"
        if parent.base_kind == "town":
            if r < 0.85:
                return f"{self.place()}村党支部", "rural"
            return f"{parent.unit}机关第{cn(k)}党支部", "organ"
        return f"{parent.unit}第{cn(k)}党支部", parent.category

    def _groups(self) -> None:
        """党小组 in the largest branches (2-8 each) until the quota is used."""
        left = self.counts["group"]
        for branch in sorted(self.branches, key=lambda b: -b.size):
            if left <= 0 or branch.size < 20:
                break
            for k in range(1, min(left, max(2, min(8, branch.size // 12))) + 1):
                branch.add(Spec("group", "group", branch.category, f"第{cn(k)}党小组", branch,
                                branch.top))
                left -= 1


class BranchSizer:
    """Members per branch: mostly 5-40, ~2% oversized, ~3% under 3, one very large."""

    def __init__(self, rng: random.Random, total: int) -> None:
        self.rng = rng
        self.total = total

    def sizes(self, branches: list[Spec]) -> list[int]:
        rng, n = self.rng, len(branches)
        sizes = [5 + int(rng.triangular(0, 36, 0)) for _ in range(n)]
        bounds = [(5, 40)] * n
        big = self._big_index(branches)
        sizes[big], bounds[big] = min(BIG_BRANCH, max(60, self.total // 8)), (0, 0)
        others = [i for i in range(n) if i != big]
        special = rng.sample(others, min(len(others), round(n * 0.03) + round(n * 0.02)))
        tiny, over = special[:round(n * 0.03)], special[round(n * 0.03):]
        for i in tiny:
            sizes[i], bounds[i] = rng.choice((1, 2)), (0, 0)
        for i in over:
            sizes[i], bounds[i] = min(300, 60 + int(rng.expovariate(1 / 45))), (60, 300)
        self._adjust(sizes, bounds, [i for i in others if bounds[i] == (5, 40)])
        self._adjust(sizes, bounds, over)
        return sizes

    def _big_index(self, branches: list[Spec]) -> int:
        """The very large branch: a community branch of the first district if any."""
        first = [i for i, b in enumerate(branches) if b.top is branches[0].top]
        community = [i for i in first if branches[i].category == "community"]
        return self.rng.choice(community or first)

    def _adjust(self, sizes: list[int], bounds: list[tuple[int, int]], pool: list[int]) -> None:
        """Nudge sizes within their bounds until they add up to the total."""
        order = list(pool)
        self.rng.shuffle(order)
        moved = True
        while moved and sum(sizes) != self.total:
            moved = False
            step = 1 if sum(sizes) < self.total else -1
            diff = abs(self.total - sum(sizes))
            for i in order:
                if diff == 0:
                    break
                low, high = bounds[i]
                if low <= sizes[i] + step <= high:
                    sizes[i] += step
                    diff -= 1
                    moved = True


def walk(spec: Spec) -> Iterator[Spec]:
    """Pre-order (tree order) over a plan."""
    stack = [spec]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.children))


def materialise(root: Spec, today: date) -> list[Spec]:
    """Give every spec its code and organisation document, parents first."""
    # Documents of a seed are made at the start of its day, so that a date gives one city.
    made = datetime.combine(today, time_of_day(0), SHANGHAI)
    specs = list(walk(root))
    position = {id(c): i for spec in specs for i, c in enumerate(spec.children)}
    per_top: dict[int, Counter] = {}
    for spec in specs:
        parent = spec.parent
        if spec.kind != "top":
            spec.code = _code(spec, per_top.setdefault(id(spec.top), Counter()))
        if parent is not None:
            parent.counters[spec.kind] += 1
        term = (today - timedelta(days=spec.term_days_ago)).isoformat() if spec.term_days_ago else None
        spec.doc = orgs.new_document(spec.name, spec.org_type, spec.category,
                                     parent.doc if parent else None, spec.code,
                                     position.get(id(spec), 0), term, now=made)
        spec.region = spec.region or (spec.top.region if spec.top else "")
    return specs


def _code(spec: Spec, numbers: Counter) -> str:
    """Readable, unique codes: D01, D01-P003, D01-P003-Z01, D01-P003-B0012, ...-G1.

    基层党委 and 党支部 are numbered within their district or industry committee,
    党总支 and 党小组 within their parent."""
    numbers[spec.kind] += 1
    parent = spec.parent
    if parent is None:
        return ROOT_CODE
    if spec.kind == "base":
        return f"{parent.code}-P{numbers['base']:03d}"
    if spec.kind == "general":
        return f"{parent.code}-Z{parent.counters['general'] + 1:02d}"
    if spec.kind == "branch":
        return f"{parent.code}-B{numbers['branch']:04d}"
    return f"{parent.code}-G{parent.counters['group'] + 1}"


def plan_city(scale: float, today: date) -> list[Spec]:
    """The organisation tree a scale gives (documents without members), in tree order."""
    rng = random.Random(SEED)
    root = CityPlanner(rng, scaled_counts(scale)).plan()
    return materialise(root, today)
