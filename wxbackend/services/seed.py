"""The deterministic demo city: a synthetic 鹭城 shaped like the real one.

At scale 1.0 the city has 14,000 organisations (one city committee, 6 district
and 8 industry committees, ~350 基层党委, ~900 党总支, ~12,300 党支部 and ~450
党小组) and 219,000 members; every count scales linearly with ``scale``. A fixed
random seed makes the same scale (and the same ``today``) give the same city::

    report = await seed_city(ctx, 0.02)      # into an empty database
    print(report.summary())
    login = await ensure_demo(ctx, 0.02)     # `serve --demo`: seed once, then reuse

SecantusDB inserts ~1,000 documents/s into indexed collections and several
times faster into bare ones, so the bulk load drops the secondary indexes of
the two collections it fills (only while they are empty) and builds them once
at the end (measured at scale 0.2: 36 s against 105 s loading into indexed
collections; at 1.0 building the indexes is still two thirds of the time, see
bench/seed.py); every maintained counter is computed here, in Python, and written
with the organisation documents, never by per-member ``$inc``.

The city, its districts and its ID-card region codes (3599xx) are fictional.
Demo accounts share one published password (:data:`DEMO_PASSWORD`): they exist
only in the demo city.
"""

from __future__ import annotations

import asyncio
import bisect
import random
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as time_of_day
from itertools import accumulate
from typing import Any

import models
from models import members as members_model
from models import orgs as orgs_model
from models import users as users_model
from wxbackend.clock import SHANGHAI
from wxbackend.context import AppContext
from wxbackend.errors import Conflict, DomainError
from wxbackend.idcard import make_id_card
from wxbackend.services import admins, members, orgs, orgtree
from wxbackend.services.access import Actor

SEED = 20260101
DEMO_PASSWORD = "demo-city-2026"  # noqa: S105 - published, demo city only
CITY = "鹭城"
ROOT_NAME = "中共鹭城市委员会"
ROOT_CODE = "LC"
# Organisations of each kind and members at scale 1.0; the minimum keeps a tiny
# city a real tree (root > district > committee > general branch > branches).
FULL_SHAPE = {"district": (6, 1), "industry": (8, 1), "base": (350, 1), "general": (900, 1),
              "branch": (12_285, 4), "group": (450, 1)}
FULL_MEMBERS = 219_000
BATCH = 1000
BIG_BRANCH = 1200          # one branch this large: check-in of a 1,000-member meeting
EXPIRED_SHARE = 0.08       # organisations whose term has run out
LOCK_KEY = "seed:running"


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# -- fictional places -----------------------------------------------------------

# code, district, ID-card region code, weight (share of members relative to others)
DISTRICTS = [("D01", "鹭滨区", "359902", 0.130), ("D02", "云湾区", "359903", 0.113),
             ("D03", "青屿区", "359904", 0.100), ("D04", "凤林区", "359905", 0.120),
             ("D05", "东澜区", "359906", 0.097), ("D06", "西岑区", "359907", 0.110)]
# code, full name, short name, kind (how its units are named), category, weight
INDUSTRIES = [
    ("S01", "中共鹭城市直属机关工作委员会", "市直机关工委", "organ_dept", "organ", 0.045),
    ("S02", "中共鹭城市国有资产监督管理委员会委员会", "市国资委党委", "soe", "soe", 0.070),
    ("S03", "中共鹭城市委教育工作委员会", "市委教育工委", "school", "school", 0.060),
    ("S04", "中共鹭城市卫生健康委员会委员会", "市卫健委党委", "health", "institution", 0.040),
    ("S05", "中共鹭城市两新组织工作委员会", "市两新工委", "twonew", "private", 0.050),
    ("S06", "中共鹭城市公安局委员会", "市公安局党委", "police", "organ", 0.020),
    ("S07", "中共鹭城市交通运输局委员会", "市交通运输局党委", "transport", "soe", 0.020),
    ("S08", "中共鹭城市委金融工作委员会", "市委金融工委", "finance", "soe", 0.015),
]
PLACES = _words("海天 莲花 金山 湖光 翠竹 银杏 枫林 梧桐 星河 滨江 南山 北岸 东坪 西溪 青石 白鹭 凤凰 "
                "龙泉 松柏 桂园 榕树 荔枝 玉屏 清源 紫云 锦绣 和平 建设 胜利 振兴 安澜 长乐 永安 丰泽 "
                "明珠 彩虹 天竺 石湖 古楼 新村 半山 溪头 后埔 前埔 浦口 沙坡 洪塘 霞阳 云顶 湖滨 "
                "金榜 瑞景 文灶 槟榔 屿后 蔡塘 林边 仙岳 江头 围里 殿前 高林 五缘 钟宅 乌石")
FIRMS = _words("科技 电子 物流 贸易 食品 智能 新材料 医药 文化传媒 软件 机械 纺织 包装 光电 建材")
CITY_DEPTS = _words("发展改革委 教育局 科技局 民政局 司法局 财政局 人社局 自然资源局 生态环境局 住建局 "
                    "农业农村局 商务局 文旅局 应急局 审计局 市场监管局 统计局 医保局 信访局 城管局 水利局 "
                    "税务局 档案局 体育局 国资委机关 工信局 海洋局 侨办 外事办 机关事务局")
TOP_DEPTS = _words("办公室 组织部 宣传部 统战部 政法委 纪委监委机关 机关服务中心 党校 研究室 档案馆")
# Departments a 党总支 of a unit is named after (机关, 生产运营, 教工 ...), by category.
DEPARTMENTS = {
    "organ": _words("机关 业务处室 直属单位 执法支队 服务中心 离退休干部 综合事务 信息中心 后勤保障 "
                    "派出机构 窗口单位"),
    "soe": _words("机关 生产运营 工程 营销 物业 第一分公司 第二分公司 离退休"),
    "school": _words("教工 学生 行政后勤 离退休 高中部 初中部"),
    "institution": _words("内科 外科 医技 护理 行政后勤 离退休"),
    "private": _words("总部 研发中心 生产基地 销售中心"),
    "social": _words("秘书处 会员单位 服务中心"),
}
AREAS = _words("东片 西片 南片 北片 中片 新区 老城")
SOCIAL = _words("行业协会 商会 律师协会 社工服务中心 志愿者协会 基金会 民办学校 养老服务中心")

# -- people -----------------------------------------------------------------------

SURNAMES = [("陈", 10), ("林", 7), ("黄", 6), ("王", 6), ("李", 6), ("张", 5), ("刘", 4),
            ("吴", 4), ("郑", 3.5), ("杨", 3), ("许", 2.5), ("蔡", 2.5), ("洪", 2), ("苏", 2),
            ("周", 2), ("叶", 2), ("曾", 2), ("谢", 1.8), ("庄", 1.5), ("赵", 1.5), ("徐", 1.5),
            ("孙", 1.2), ("朱", 1.2), ("胡", 1.2), ("郭", 1.2), ("何", 1.1), ("高", 1), ("罗", 1),
            ("梁", 1), ("宋", 0.9), ("唐", 0.9), ("韩", 0.8), ("冯", 0.8), ("邓", 0.8), ("曹", 0.7),
            ("彭", 0.7), ("肖", 0.7), ("田", 0.6), ("董", 0.6), ("袁", 0.6), ("潘", 0.6), ("于", 0.5),
            ("蒋", 0.5), ("余", 0.5), ("杜", 0.5), ("程", 0.5), ("魏", 0.5), ("吕", 0.4), ("丁", 0.4),
            ("任", 0.4), ("沈", 0.4), ("姚", 0.4), ("卢", 0.4), ("姜", 0.3), ("钟", 0.3), ("汪", 0.3),
            ("范", 0.3), ("方", 0.3), ("石", 0.3), ("邱", 0.3), ("江", 0.3), ("柯", 0.3), ("游", 0.3),
            ("施", 0.3), ("戴", 0.2), ("严", 0.2), ("龚", 0.2), ("欧阳", 0.1), ("上官", 0.05)]
MALE_CHARS = _words("伟 强 磊 军 勇 杰 涛 斌 超 明 刚 平 辉 鹏 华 飞 鑫 波 宇 浩 凯 健 俊 帆 旭 宁 龙 林 "
                    "建 国 志 文 海 峰 东 晓 亮 成 庆 荣 德 永 家 兴 福 贵 生 振 毅 坤 炜 锋 彬 航 泽 睿 晨")
FEMALE_CHARS = _words("芳 娜 敏 静 丽 艳 娟 霞 燕 玲 婷 雪 慧 红 梅 琳 颖 倩 萍 洁 莉 秀 英 华 兰 玉 凤 佳 "
                      "欣 怡 雅 琴 薇 洋 晶 璐 瑶 妍 蓉 莹 晓 丹 宁 悦 涵 思 月 清 彤 诗")
OLD_MALE = _words("建国 国庆 建华 志强 国强 建军 卫东 振华 德明 永福 金水 文革 跃进 胜利 援朝 和平")
OLD_FEMALE = _words("秀英 桂兰 玉兰 秀珍 凤英 淑珍 美华 丽华 素珍 桂英 金花 月娥 淑英 秀兰 玉梅")
ETHNICITIES = [("汉族", 955), ("回族", 10), ("畲族", 10), ("满族", 7), ("壮族", 5), ("土家族", 4),
               ("苗族", 3), ("蒙古族", 2), ("高山族", 2), ("彝族", 2)]
EDU_LEVELS = ("研究生", "大学本科", "大学专科", "中专", "高中", "初中", "小学及以下")
# Education weights (in EDU_LEVELS order) by birth decade.
EDU_BY_DECADE = {1930: (0, 4, 6, 10, 20, 30, 30), 1940: (1, 6, 8, 12, 25, 28, 20),
                 1950: (1, 8, 12, 12, 28, 27, 12), 1960: (4, 22, 22, 15, 20, 13, 4),
                 1970: (9, 42, 25, 10, 9, 5, 0), 1980: (16, 55, 20, 4, 4, 1, 0),
                 1990: (22, 58, 17, 2, 1, 0, 0), 2000: (8, 72, 18, 1, 1, 0, 0)}
# Share of men, and the most common birth year, by organisation category.
MALE_SHARE = {"rural": 0.78, "community": 0.6, "organ": 0.68, "soe": 0.74, "private": 0.66,
              "social": 0.55, "school": 0.45, "institution": 0.45, "mobile": 0.7}
BIRTH_MODE = {"rural": 1958, "community": 1952, "organ": 1977, "soe": 1978, "private": 1988,
              "social": 1985, "school": 1984, "institution": 1980, "mobile": 1987}
PHONE_SECOND = "3333333555555558888888999764"
BIRTH_FIRST, BIRTH_LAST = date(1935, 1, 1), date(2004, 12, 31)
DUTIES = ("书记", "组织委员", "宣传委员", "纪检委员", "青年委员")


@dataclass
class SeedReport:
    scale: float
    orgs: dict[str, int]
    members: int
    active_members: int
    users: list[str]
    seconds: float
    phases: dict[str, float]
    peak_rss_mb: float
    district_members: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {v:,}" for k, v in self.orgs.items())
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in self.phases.items())
        districts = ", ".join(f"{k} {v:,}" for k, v in self.district_members.items())
        return (f"demo city at scale {self.scale:g}: {sum(self.orgs.values()):,} organisations "
                f"({kinds}); {self.members:,} members ({self.active_members:,} active); "
                f"{len(self.users)} demo users\n"
                f"members per district: {districts}\n"
                f"took {self.seconds:.1f}s ({phases}); peak RSS of this process "
                f"{self.peak_rss_mb:.0f} MB")


@dataclass
class DemoLogin:
    username: str
    password: str
    note: str


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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


# -- people ----------------------------------------------------------------------------

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


# -- loading -------------------------------------------------------------------------------

DEMO_NOTE = ("演示城市专用的公开固定密码，仅用于虚构的演示数据，切勿用于真实数据；"
             "其他演示账号 d01…（区委）、s01（行业党委）、sec-d01-b0001…（支部书记）、auditor（审计员）密码相同")


def plan_city(scale: float, today: date) -> list[Spec]:
    """The organisation tree a scale gives (documents without members), in tree order."""
    rng = random.Random(SEED)
    root = CityPlanner(rng, scaled_counts(scale)).plan()
    return materialise(root, today)


async def seed_city(ctx: AppContext, scale: float, *, today: date | None = None,
                    progress: Callable[[str], None] = _stderr) -> SeedReport:
    """Build the demo city into an empty database; ``today`` anchors ages and terms."""
    counts = scaled_counts(scale)
    if not await ctx.redis.set(LOCK_KEY, b"1", nx=True, ex=3600):
        raise Conflict("seed_running", "演示城市正在生成中，请稍后再试（如上次生成被强行中断，"
                       "请清空数据目录后重试，或一小时后锁自动解除）")
    try:
        await _require_empty(ctx)
        return await _build(ctx, scale, counts, today or ctx.clock.today(), progress)
    finally:
        await ctx.redis.delete(LOCK_KEY)


async def _require_empty(ctx: AppContext) -> None:
    # Index-served probes (a bare find_one({}) would be a collection scan).
    org = await orgs_model.collection(ctx.db).find_one({"parent_id": None}, {"_id": 1})
    member = await ctx.db[members_model.COLLECTION].find_one({"id_card_bidx": {"$gte": ""}}, {"_id": 1})
    if org is not None or member is not None:
        raise DomainError("database_not_empty",
                          "数据库中已有组织或党员数据，演示城市只能生成到空数据库中")


async def _build(ctx: AppContext, scale: float, counts: dict[str, int], today: date,
                 progress: Callable[[str], None]) -> SeedReport:
    started = time.perf_counter()
    phases: dict[str, float] = {}
    rng = random.Random(SEED)
    specs = materialise(CityPlanner(rng, counts).plan(), today)
    phases["plan"] = time.perf_counter() - started
    progress(f"seed: scale {scale:g}, {len(specs):,} organisations, {counts['members']:,} members")
    async with _IndexesDeferred(ctx, phases, progress):
        mark = time.perf_counter()
        totals = await _load_members(ctx, PeopleMaker(rng, today), rng, specs, progress)
        phases["members"] = time.perf_counter() - mark
        mark = time.perf_counter()
        _fill_counters(specs)
        await _insert_orgs(ctx, specs)
        phases["organisations"] = time.perf_counter() - mark
    mark = time.perf_counter()
    users = await _demo_users(ctx, specs)
    await orgtree.invalidate(ctx)
    phases["users"] = time.perf_counter() - mark
    mark = time.perf_counter()
    from wxbackend.services import seed_history  # here: it builds on this module's loaders

    history = await seed_history.seed_history(ctx, specs, today, progress)
    progress(f"seed: {history.summary()}")
    phases["history"] = time.perf_counter() - mark
    return SeedReport(
        scale=scale, orgs=dict(Counter(s.org_type for s in specs)), members=totals["all"],
        active_members=totals["active"], users=users, seconds=time.perf_counter() - started,
        phases=phases, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        district_members={s.code: s.doc["subtree_member_count"] for s in specs[0].children})


class _IndexesDeferred:
    """Drop the secondary indexes of the (empty) collections the seed fills and build
    them once afterwards, also when the load fails. A process that starts meanwhile
    may recreate them (models.ensure_indexes): loading is then slower, not wrong, and
    our generator keeps ID-card numbers and codes unique by itself."""

    NAMES = (members_model.COLLECTION, orgs_model.COLLECTION)

    def __init__(self, ctx: AppContext, phases: dict[str, float],
                 progress: Callable[[str], None]) -> None:
        self.ctx, self.phases, self.progress = ctx, phases, progress

    async def __aenter__(self) -> None:
        for name in self.NAMES:
            await self.ctx.db[name].drop_indexes()

    async def __aexit__(self, *exc: object) -> None:
        mark = time.perf_counter()
        for name in self.NAMES:
            for index in models.INDEXES[name]:  # one by one: minutes at scale 1.0, so say where
                self.progress(f"seed: index {name} {dict(index.document['key'])} "
                              f"({time.perf_counter() - mark:.0f}s)")
                await self.ctx.db[name].create_indexes([index])
        self.phases["indexes"] = time.perf_counter() - mark


class _Loader:
    """insert_many in batches, the next batch being built while one is in flight."""

    def __init__(self, ctx: AppContext, collection: str) -> None:
        self.coll = ctx.db[collection]
        self.buffer: list[dict[str, Any]] = []
        self.pending: asyncio.Task | None = None
        self.inserted = 0

    async def add(self, docs: list[dict[str, Any]]) -> None:
        self.buffer.extend(docs)
        if len(self.buffer) >= BATCH:
            await self.flush()

    async def flush(self) -> None:
        await self.wait()
        batch, self.buffer = self.buffer, []
        if batch:
            self.pending = asyncio.create_task(self.coll.insert_many(batch, ordered=False))
            self.inserted += len(batch)
            await asyncio.sleep(0)  # let it send before we go back to building

    async def wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            await pending

    async def close(self) -> None:
        await self.flush()
        await self.wait()

    def abort(self) -> None:
        if self.pending is not None:
            self.pending.cancel()


async def _load_members(ctx: AppContext, maker: PeopleMaker, rng: random.Random,
                        specs: list[Spec], progress: Callable[[str], None]) -> Counter:
    loader = _Loader(ctx, members_model.COLLECTION)
    totals: Counter = Counter()
    branches = [s for s in specs if s.kind == "branch"]
    wanted, step = sum(b.size for b in branches), max(20_000, BATCH)
    mark, next_report = time.perf_counter(), step
    try:
        for spec in branches:
            people = _people_of(ctx, maker, spec)
            _count(spec, people, totals)
            _lead(rng, spec.doc, people)
            await loader.add(people)
            if totals["all"] >= next_report:
                rate = totals["all"] / (time.perf_counter() - mark)
                progress(f"seed: members {totals['all']:,}/{wanted:,} ({rate:,.0f}/s)")
                next_report += step
        await loader.close()
    finally:
        loader.abort()
    return totals


def _people_of(ctx: AppContext, maker: PeopleMaker, spec: Spec) -> list[dict[str, Any]]:
    groups = [c.doc["_id"] for c in spec.children if c.kind == "group"]
    people = []
    for i in range(spec.size):
        clean, state = maker.person(spec.category, spec.region)
        doc = members.new_document(ctx, clean, spec.doc)
        doc["state"] = state
        if groups:  # members of a branch with 党小组 each belong to one
            doc["group_id"] = groups[i % len(groups)]
        people.append(doc)
    return people


def _count(spec: Spec, people: list[dict[str, Any]], totals: Counter) -> None:
    active = [p for p in people if p["state"] == "active"]
    spec.doc["member_count"] = len(active)
    spec.doc["full_member_count"] = sum(1 for p in active if p["party_status"] == "full")
    totals["all"] += len(people)
    totals["active"] += len(active)


def _lead(rng: random.Random, org: dict[str, Any], people: list[dict[str, Any]]) -> None:
    """A secretary for most branches; a 3-5 person 支委会 where 7+ full members."""
    full = [p for p in people if p["state"] == "active" and p["party_status"] == "full"]
    if not full or rng.random() >= 0.96:
        return
    chosen = rng.sample(full, rng.randint(3, 5) if len(full) >= 7 else 1)
    org["secretary"] = {"member_id": chosen[0]["_id"], "name": chosen[0]["name"]}
    if len(chosen) > 1:
        org["committee"] = [{"member_id": p["_id"], "name": p["name"], "duty": duty}
                            for p, duty in zip(chosen, DUTIES, strict=False)]


def _fill_counters(specs: list[Spec]) -> None:
    """subtree_member_count and child_count, from the branches' member counts."""
    by_id = {s.doc["_id"]: s.doc for s in specs}
    for spec in specs:
        spec.doc["child_count"] = len(spec.children)
        if spec.kind == "branch":
            for org_id in spec.doc["org_ancestors"]:
                by_id[org_id]["subtree_member_count"] += spec.doc["member_count"]


async def _insert_orgs(ctx: AppContext, specs: list[Spec]) -> None:
    loader = _Loader(ctx, orgs_model.COLLECTION)
    try:
        for spec in specs:  # tree order: a root is never missing while its subtree exists
            await loader.add([spec.doc])
        await loader.close()
    finally:
        loader.abort()


# -- demo accounts -----------------------------------------------------------------------------

async def _demo_users(ctx: AppContext, specs: list[Spec]) -> list[str]:
    """Two at a time: argon2 hashing (~50 ms and 64 MB each) runs in threads, so two
    use both cores without one process holding a dozen hashes' memory at once."""
    system = Actor.system_actor("seed")
    accounts = _demo_accounts(specs)
    slots = asyncio.Semaphore(2)

    async def create(username: str, display: str, role: str, spec: Spec) -> None:
        async with slots:
            await admins.create_user(ctx, system, username=username, password=DEMO_PASSWORD,
                                     display_name=display, roles=[(role, spec.doc["_id"])])
    await asyncio.gather(*(create(*account) for account in accounts))
    return [username for username, *_ in accounts]


def _demo_accounts(specs: list[Spec]) -> list[tuple[str, str, str, Spec]]:
    """(username, display name, role, organisation) of each demo account."""
    root = specs[0]
    accounts = [("city", "市委组织部（演示）", "city_admin", root),
                ("auditor", "市委巡察办审计员（演示）", "auditor", root)]
    tops = root.children
    districts = [t for t in tops if t.base_kind == "district"]
    industries = [t for t in tops if t.base_kind != "district"]
    for top in [*districts, *industries[:1]]:
        accounts.append((top.code.lower(), f"{top.unit}组织部门（演示）", "committee_admin", top))
    big = max((s for s in specs if s.kind == "branch"), key=lambda s: s.size)
    for branch in [*(_first_led_branch(t) for t in [*districts, *industries[:1]]), big]:
        if branch is None:
            continue
        username = f"sec-{branch.top.code.lower()}-{branch.code.rsplit('-', 1)[1].lower()}"
        secretary = branch.doc["secretary"]["name"] if branch.doc["secretary"] else "书记"
        accounts.append((username, f"{secretary}（{branch.name}）", "secretary", branch))
    return list({a[0]: a for a in accounts}.values())


def _first_led_branch(top: Spec) -> Spec | None:
    return next((s for s in walk(top) if s.kind == "branch" and s.doc["secretary"]), None)


# The member the README's mini-program walkthrough binds with (published, demo only).
API_EXAMPLE_MEMBER = {
    "name": "演示党员", "id_card": "350203199001010018", "phone": "13800000001", "gender": "男",
    "birth_date": "1990-01-01", "party_status": "full", "joined_on": "2015-07-01",
    "full_on": "2016-07-01", "category": "employed", "education": "大学本科",
}


async def _add_api_example_member(ctx: AppContext) -> None:
    """Put the README's example member in the branch of the demo secretary ``sec-d01-b0001``."""
    secretary = await users_model.by_username(ctx.db, "sec-d01-b0001")
    if secretary is None:
        return
    await members.create(ctx, Actor.system_actor("seed"), secretary["roles"][0]["org_id"],
                         API_EXAMPLE_MEMBER)


async def ensure_demo(ctx: AppContext, scale: float) -> DemoLogin:
    """``serve --demo``: seed the demo city unless organisations exist; its login."""
    has_orgs = await orgs_model.collection(ctx.db).find_one({"parent_id": None}, {"_id": 1})
    if has_orgs is None:
        report = await seed_city(ctx, scale)
        _stderr(report.summary())
        await _add_api_example_member(ctx)
    elif await users_model.by_username(ctx.db, "city") is None:
        return DemoLogin("", "", "数据库中已有组织数据（不是演示城市），未生成演示城市和演示账号")
    return DemoLogin("city", DEMO_PASSWORD, DEMO_NOTE)
