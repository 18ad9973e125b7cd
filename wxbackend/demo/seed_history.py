"""A year of organisational life for the demo city: meetings, attendance, minutes,
comments, votes, and the compliance they add up to.

Called by :func:`wxbackend.demo.seed.seed_city` once organisations and
members exist. For the twelve months up to today (the current month only up
to today) every branch holds its 三会一课 as its *profile* makes it: most
branches are diligent, some sloppy, some fall behind part-way through the
year, a few hold almost nothing (空壳), so the compliance and ledger pages
show real variety. At scale 1.0 that is ~300,000 meetings with ~4 million
attendance marks, embedded in the meeting documents as a settled meeting keeps
them (``counts_live`` false: a running meeting's marks are documents of their
own, ``models.attendance``, until it is settled after it finished).

Like the rest of the seed it is bulk work: documents are built in Python and
inserted with ``insert_many`` into collections whose indexes are made before
the first document; the compliance documents and committee roll-ups are
computed here with the same counting as ``compliance.meeting_finished``
(``compliance.count_in_memory``), never by calling it per meeting; every branch
has its document for each month, as the monthly opening gives it
(``compliance.open_in_memory``), so a month is judged by the branch as it was. A fixed
random seed makes the same city give the same history (ids aside)::

    report = await seed_history(ctx, specs, date(2026, 3, 1), print)
    report.meetings, report.marks
"""

from __future__ import annotations

import random
import struct
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from bson import ObjectId

from models import comments as comments_model
from models import compliance as compliance_model
from models import meetings as meetings_model
from models import members as members_model
from models import votes as votes_model
from models.enums import MEETING_TYPES
from wxbackend.clock import SHANGHAI
from wxbackend.context import AppContext
from wxbackend.demo.city import walk
from wxbackend.demo.loader import IndexesFirst, Loader
from wxbackend.services.meetings import compliance

SEED = 20260102  # not the city's seed: adding history must not change the city
# Branch profiles: (name, share, chance a due meeting is held, attendance propensity).
PROFILES = [("diligent", 0.66, 0.92, 0.88), ("sloppy", 0.20, 0.55, 0.76),
            ("lagging", 0.11, 0.93, 0.72), ("dormant", 0.03, 0.06, 0.55)]
CANCEL_SHARE = 0.015      # meetings called off
UNRECORDED_SHARE = 0.01   # finished, but nobody recorded attendance (does not count)
COMMENT_SHARE = {"theme_day": 0.08, "lecture": 0.10, "life_meeting": 0.25}
VOTE_SHARE = {"branch_assembly": 0.07, "committee": 0.02}
# Ways members checked in, in proportion (oa_qr 35%, mp_code 35%, rotating 20%, manual 10%).
HOW = ("oa_qr",) * 7 + ("mp_code",) * 7 + ("rotating",) * 4 + ("manual",) * 2
LEAVE_REASONS = ("出差", "生病", "值班", "家中有事")
ONE_DAY = timedelta(days=1)
HISTORY_COLLECTIONS = (meetings_model.COLLECTION, compliance_model.COLLECTION, compliance_model.ROLLUPS,
                       comments_model.COLLECTION, votes_model.COLLECTION, votes_model.BALLOTS,
                       votes_model.VOTERS)

TOPICS = {
    "theme_day": ("学习贯彻党的二十大精神", "重温入党誓词", "志愿服务进社区", "参观红色教育基地",
                  "学习党章党规", "垃圾分类宣传实践", "走访慰问困难党员", "清明祭英烈"),
    "branch_assembly": ("审议发展对象", "预备党员转正", "通报上季度工作", "选举支部委员会",
                        "收缴党费情况通报", "民主评议党员"),
    "committee": ("研究本月工作安排", "讨论发展党员工作", "研究党费收缴", "部署主题党日",
                  "研究困难党员帮扶"),
    "group": ("学习交流", "读书分享", "谈心谈话", "传达支部会议精神"),
    "lecture": ("书记讲党课：坚定理想信念", "党的历史专题党课", "廉政教育专题党课",
                "学习新修订的纪律处分条例", "弘扬伟大建党精神"),
    "life_meeting": ("年度组织生活会暨民主评议党员", "专题组织生活会"),
    "other": ("志愿服务活动", "红色观影", "党建知识竞赛", "结对共建活动"),
}
COMMENTS = ("通过这次学习，深受教育，要在工作中发挥先锋模范作用。", "重温入党誓词，心潮澎湃，不忘初心。",
            "这次党课内容很实在，对照检查了自己的不足。", "支部组织得很好，希望多开展这样的活动。",
            "作为一名老党员，我会继续发挥余热。", "要把学习成果转化为推动工作的实际行动。",
            "批评与自我批评很深刻，受益匪浅。", "感谢支部的关心，我会积极参加组织生活。")
VOTE_TITLES = ("表决：接收预备党员", "表决：预备党员按期转正", "表决：确定发展对象",
               "表决：党费使用方案", "表决：推荐优秀共产党员")


@dataclass
class HistoryReport:
    months: list[str]
    meetings: int = 0
    marks: int = 0
    comments: int = 0
    votes: int = 0
    ballots: int = 0
    compliance_docs: int = 0
    profiles: Counter = field(default_factory=Counter)
    phases: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"history {self.months[0]}..{self.months[-1]}: {self.meetings:,} meetings, "
                f"{self.marks:,} attendance marks, {self.comments:,} comments, {self.votes:,} votes "
                f"({self.ballots:,} ballots), {self.compliance_docs:,} compliance documents; branches "
                + ", ".join(f"{k} {v:,}" for k, v in sorted(self.profiles.items())))


def window(today: date) -> list[str]:
    """The twelve months up to today's month."""
    current = f"{today.year:04d}-{today.month:02d}"
    return [compliance.shift_month(current, -i) for i in range(11, -1, -1)]


def _oid(rng: random.Random, when: datetime) -> ObjectId:
    """An ObjectId of a past time (keyset pages go by _id) with random, seeded bytes."""
    return ObjectId(struct.pack(">I", int(when.timestamp())) + rng.randbytes(8))


# -- one branch's year -------------------------------------------------------------

@dataclass
class Branch:
    doc: dict[str, Any]
    people: list[dict[str, Any]]                     # active members, insertion order
    groups: dict[ObjectId, list[dict[str, Any]]]     # 党小组 -> its members
    committee: list[dict[str, Any]]
    profile: str
    hold: float
    presence: float
    stop_month: int = 99                             # lagging: index of the month it stops

    @property
    def organiser(self) -> dict[str, Any]:
        secretary = self.doc.get("secretary") or {}
        return {"user_id": None, "name": secretary.get("name", "支部负责人")}


class HistoryMaker:
    """Meetings of one branch after another, from one seeded RNG."""

    def __init__(self, rng: random.Random, rules: compliance.Rules, months: list[str], now: datetime) -> None:
        self.rng, self.rules, self.months, self.now = rng, rules, months, now

    def profile(self, doc: dict[str, Any], people: list[dict[str, Any]]) -> tuple[str, float, float, int]:
        rng = self.rng
        pick, acc = rng.random(), 0.0
        name, hold, presence = PROFILES[0][0], PROFILES[0][2], PROFILES[0][3]
        for name, share, hold, presence in PROFILES:  # noqa: B007 - the loop picks one profile
            acc += share
            if pick < acc:
                break
        if len(people) < 3:  # a branch too small to function: mostly an empty shell
            name, hold, presence = "dormant", 0.2, 0.6
        stop = rng.randint(len(self.months) - 6, len(self.months) - 2) if name == "lagging" else 99
        presence = min(0.99, max(0.35, rng.gauss(presence, 0.06)))
        return name, hold, presence, stop

    def plan(self, b: Branch) -> list[tuple[str, int, Any]]:
        """(type, month index, audience) of each meeting the branch holds."""
        rng, wanted = self.rng, []
        for i, month in enumerate(self.months):
            chance = b.hold if i < b.stop_month else 0.08
            if rng.random() < chance:
                wanted.append(("theme_day", i, None))
            if b.committee and rng.random() < chance:
                wanted.append(("committee", i, None))
            for group_id in b.groups:
                if rng.random() < chance:
                    wanted.append(("group", i, group_id))
            if rng.random() < 0.05 * chance:
                wanted.append(("other", i, None))
            if month.endswith(("-01", "-04", "-07", "-10")) or i == 0:
                wanted.extend(self._quarterly(i, chance))
            if month.endswith("-12") or (i == 0 and not month.endswith("-12")):
                wanted.extend(self._yearly(i, month, chance))
        return wanted

    def _quarterly(self, first: int, chance: float) -> list[tuple[str, int, Any]]:
        """One 支部党员大会 and one 党课 somewhere in the quarter starting at ``first``."""
        rng, found = self.rng, []
        left = 3 - (int(self.months[first][5:7]) - 1) % 3   # months of this quarter in the window
        for kind in ("branch_assembly", "lecture"):
            if rng.random() < chance:
                found.append((kind, min(len(self.months) - 1, first + rng.randrange(left)), None))
            if kind == "branch_assembly" and rng.random() < 0.08 * chance:  # an extra one (e.g. a vote)
                found.append((kind, min(len(self.months) - 1, first + rng.randrange(left)), None))
        return found

    def _yearly(self, index: int, month: str, chance: float) -> list[tuple[str, int, Any]]:
        """组织生活会: in December for the earlier year, early in the year for the later one."""
        if month.endswith("-12"):
            return [("life_meeting", index, None)] if self.rng.random() < chance else []
        later = [i for i, m in enumerate(self.months) if m[:4] == self.months[-1][:4]]
        if not later or self.rng.random() >= chance:
            return []
        return [("life_meeting", later[min(len(later) - 1, self.rng.randrange(3))], None)]

    def start(self, b: Branch, kind: str, index: int) -> datetime | None:
        rng, month = self.rng, self.months[index]
        year, mon = int(month[:4]), int(month[5:7])
        day = (b.doc["position"] % 20) + 5 if kind == "theme_day" else rng.randint(1, 28)
        hour = rng.choice((9, 14, 15, 19)) if kind != "theme_day" else 14
        local = datetime(year, mon, day, hour, 30 if hour == 14 else 0, tzinfo=SHANGHAI)
        at = local.astimezone(UTC)
        return at if at + timedelta(hours=2) < self.now else None

    def meeting(self, b: Branch, kind: str, index: int, audience: Any) -> dict[str, Any] | None:
        start = self.start(b, kind, index)
        if start is None:
            return None
        rng = self.rng
        expected = (b.committee if kind == "committee" else b.groups[audience] if kind == "group" else b.people)
        if not expected:
            return None
        end = start + timedelta(minutes=rng.choice((60, 90, 120)))
        topic = rng.choice(TOPICS[kind])
        title = f"{int(self.months[index][5:7])}月{MEETING_TYPES[kind]}：{topic}"
        doc = meetings_model.new_meeting(
            b.doc, kind, title, start, end, b.organiser, SHANGHAI, now=start - timedelta(days=5),
            topic=topic, place=_place(b.doc["category"], kind), status="finished",
            audience=_audience(kind, audience), expected=[m["_id"] for m in expected],
            expected_count=len(expected), published_at=start - timedelta(days=3),
            reminded_at=start - timedelta(hours=1), finished_at=end, updated_at=end,
            attendance={}, counts_live=False)  # settled: the marks and counts are in the meeting
        if rng.random() < CANCEL_SHARE:
            doc.update(status="cancelled", cancelled_at=start - timedelta(days=1), finished_at=None)
            return doc
        if rng.random() >= UNRECORDED_SHARE:
            self.attend(b, doc, expected)
        if rng.random() < 0.92:
            self.minutes(b, doc)
        return doc

    def attend(self, b: Branch, doc: dict[str, Any], expected: list[dict[str, Any]]) -> None:
        """Marks of ~4 million members a year at full scale: kept to plain arithmetic."""
        random_, marks, leave = self.rng.random, {}, {}
        counts = {"present": 0, "online": 0, "excused": 0}
        online = 0.06 + (0.25 if b.doc["category"] == "mobile" else 0.04)
        present = online + b.presence * (1.06 - online)
        start = doc["start"]
        for member in expected:
            r = random_()
            if r < 0.06:
                status, how = "excused", "leave"
                leave[member["key"]] = {"reason": LEAVE_REASONS[int(r * 66) % 4], "status": "approved",
                                        "at": start - ONE_DAY, "decided_by": b.organiser["name"],
                                        "decided_at": start - ONE_DAY / 2}
            elif r < online:
                status, how = "online", "online"
            elif r < present:
                status, how = "present", HOW[int(random_() * len(HOW))]
            else:
                continue
            marks[member["key"]] = {"status": status, "how": how,
                                    "at": start + timedelta(seconds=int(random_() * 1500) - 900)}
            counts[status] += 1
        doc.update(attendance=marks, leave=leave, counts=counts)

    def minutes(self, b: Branch, doc: dict[str, Any]) -> None:
        counts = doc["counts"]
        text = (f"会议由{b.organiser['name']}主持，应到{doc['expected_count']}人，实到{counts['present']}人，"
                f"线上参会{counts['online']}人，请假{counts['excused']}人。会议围绕“{doc['topic']}”开展，"
                "与会党员逐一发言，会议达到了预期效果。")
        minutes: dict[str, Any] = {"text": text, "recorded_by": b.organiser["name"],
                                   "recorded_at": doc["end"] + timedelta(hours=2), "amendments": []}
        if self.rng.random() < 0.85:
            minutes.update(confirmed_by=b.organiser["name"], confirmed_at=doc["end"] + timedelta(days=1))
        doc["minutes"] = minutes

    def comments(self, b: Branch, doc: dict[str, Any]) -> list[dict[str, Any]]:
        rng = self.rng
        if rng.random() >= COMMENT_SHARE.get(doc["type"], 0):
            return []
        marks = doc["attendance"]
        attended = [m for m in b.people if m["key"] in marks and marks[m["key"]]["status"] != "excused"]
        if not attended:
            return []
        found = []
        for member in rng.sample(attended, min(len(attended), rng.randint(1, 4))):
            at = doc["end"] + timedelta(minutes=rng.randint(10, 3000))
            row = {"_id": _oid(rng, at), "meeting_id": doc["_id"], "org_id": doc["org_id"],
                   "org_ancestors": doc["org_ancestors"], "member_id": member["_id"], "name": member["name"],
                   "text": rng.choice(COMMENTS), "at": at, "hidden": False}
            if rng.random() < 0.02:
                row.update(hidden=True, hidden_reason="与会议主题无关", hidden_by=b.organiser["name"],
                           hidden_at=at + timedelta(hours=3))
            found.append(row)
        doc["comment_count"] = sum(1 for r in found if not r["hidden"])
        return found

    def vote(self, b: Branch, doc: dict[str, Any]) -> tuple[dict[str, Any] | None, list, list]:
        rng = self.rng
        if rng.random() >= VOTE_SHARE.get(doc["type"], 0) or not doc["attendance"]:
            return None, [], []
        anonymous = rng.random() < 0.4
        vote = {"_id": ObjectId(), "meeting_id": doc["_id"], "org_id": doc["org_id"],
                "org_ancestors": doc["org_ancestors"], "title": rng.choice(VOTE_TITLES),
                "options": ["同意", "不同意", "弃权"], "multiple": False, "anonymous": anonymous,
                "status": "closed", "counts": [0, 0, 0], "ballots": 0,
                "created_by": {"id": None, "name": b.organiser["name"]}, "created_at": doc["start"],
                "closed_at": doc["end"], "closed_by": {"id": None, "name": b.organiser["name"]}}
        ballots, voters = [], []
        names = {str(m["_id"]): m["name"] for m in b.people}
        for key, mark in doc["attendance"].items():
            if mark["status"] not in ("present", "online") or rng.random() >= 0.95:
                continue
            choice = 0 if rng.random() < 0.9 else rng.choice((1, 2))
            vote["counts"][choice] += 1
            vote["ballots"] += 1
            voter = f"{vote['_id']}:{key}"
            if anonymous:
                voters.append({"_id": voter, "vote_id": vote["_id"]})
                ballots.append({"_id": rng.randbytes(12).hex(), "vote_id": vote["_id"], "choices": [choice]})
            else:
                ballots.append({"_id": voter, "vote_id": vote["_id"], "member_id": ObjectId(key),
                                "name": names.get(key, ""), "choices": [choice], "at": mark["at"]})
        doc["vote_count"] = 1
        return vote, ballots, voters


def _place(category: str, kind: str) -> str:
    if kind == "other":
        return "活动现场"
    return {"rural": "村党群服务中心", "community": "社区党群服务中心", "mobile": "流动党员服务站",
            "school": "学校会议室"}.get(category, "党员活动室")


def _audience(kind: str, group_id: ObjectId | None) -> dict[str, Any]:
    if kind == "committee":
        return {"kind": "committee"}
    if kind == "group":
        return {"kind": "group", "group_id": group_id}
    return {"kind": "branch"}


# -- loading ---------------------------------------------------------------------------

async def _members_by_branch(ctx: AppContext, top_id: ObjectId) -> dict[ObjectId, list[dict[str, Any]]]:
    """Active members of one district/industry committee's subtree, by branch, in the
    order the seed created them (ObjectIds of one process increase)."""
    cursor = ctx.db[members_model.COLLECTION].find(
        {"org_ancestors": top_id}, {"name": 1, "org_id": 1, "group_id": 1, "state": 1})
    found: dict[ObjectId, list[dict[str, Any]]] = defaultdict(list)
    async for member in cursor:
        if member["state"] == "active":
            member["key"] = str(member["_id"])  # attendance maps are keyed by it, ~4 million times
            found[member["org_id"]].append(member)
    for people in found.values():
        people.sort(key=lambda m: m["_id"])
    return found


class _Sink:
    """One bulk loader per collection (the seed's: next batch built while one is in flight)."""

    def __init__(self, ctx: AppContext) -> None:
        self.loaders = {name: Loader(ctx, name) for name in HISTORY_COLLECTIONS}

    async def add(self, name: str, docs: list[dict[str, Any]]) -> None:
        if docs:
            await self.loaders[name].add(docs)

    async def close(self) -> None:
        for loader in self.loaders.values():
            await loader.close()

    def abort(self) -> None:
        for loader in self.loaders.values():
            loader.abort()


async def seed_history(ctx: AppContext, specs: list[Any], today: date,
                       progress: Callable[[str], None]) -> HistoryReport:
    """Load a year of meetings for the seeded city ``specs`` (city.Spec, tree order)."""
    months = window(today)
    report = HistoryReport(months)
    cutoff = datetime(today.year, today.month, today.day, tzinfo=SHANGHAI).astimezone(UTC)
    maker = HistoryMaker(random.Random(SEED), compliance.Rules.from_settings(ctx.settings), months, cutoff)
    rollups: Counter = Counter()
    documents: Counter = Counter()  # branch documents per (organisation, month): roll-ups' branches
    started = time.perf_counter()

    class Indexed(IndexesFirst):
        NAMES = HISTORY_COLLECTIONS

    sink = _Sink(ctx)
    async with Indexed(ctx, report.phases, progress):
        try:
            for top in specs[0].children:
                people = await _members_by_branch(ctx, top.doc["_id"])
                for spec in walk(top):
                    if spec.kind == "branch":
                        await _branch_year(maker, spec, people.get(spec.doc["_id"], []), sink, report,
                                           rollups, documents)
                rate = report.meetings / (time.perf_counter() - started)
                progress(f"seed: history {top.code}: {report.meetings:,} meetings so far ({rate:,.0f}/s)")
            await sink.add(compliance_model.ROLLUPS, [
                {"_id": compliance_model.rollup_id(o, m), "org_id": o, "month": m,
                 "compliant": rollups.get((o, m), 0), "branches": n}
                for (o, m), n in documents.items()])
            await sink.close()
            for month in months:  # every branch has its document for each month
                await compliance_model.mark_opened(ctx.db, month, ctx.clock.now())
        finally:
            sink.abort()
        report.phases["load"] = time.perf_counter() - started
    return report


async def _branch_year(maker: HistoryMaker, spec: Any, people: list[dict[str, Any]], sink: _Sink,
                       report: HistoryReport, rollups: Counter, documents: Counter) -> None:
    doc = spec.doc
    docs: dict[str, dict[str, Any]] = {}
    compliance.open_in_memory(docs, maker.rules, doc, maker.months)
    if not people:
        report.profiles["empty"] += 1
        await _compliance_docs(sink, report, docs, rollups, documents)
        return
    groups = {c.doc["_id"]: [] for c in spec.children if c.kind == "group"}
    for member in people:
        if member.get("group_id") in groups:
            groups[member["group_id"]].append(member)
    by_id = {m["_id"]: m for m in people}
    committee = [by_id[c["member_id"]] for c in doc.get("committee") or [] if c["member_id"] in by_id]
    name, hold, presence, stop = maker.profile(doc, people)
    branch = Branch(doc, people, groups, committee, name, hold, presence, stop)
    report.profiles[name] += 1
    required = maker.rules.required(doc)
    for kind, index, audience in maker.plan(branch):
        meeting = maker.meeting(branch, kind, index, audience)
        if meeting is None:
            continue
        if meeting["status"] == "finished":
            await _social(maker, branch, meeting, sink, report)
            compliance.count_in_memory(docs, maker.rules, doc, required, meeting)
        report.meetings += 1
        report.marks += len(meeting["attendance"])
        await sink.add(meetings_model.COLLECTION, [meeting])
    await _compliance_docs(sink, report, docs, rollups, documents)


async def _compliance_docs(sink: _Sink, report: HistoryReport, docs: dict[str, dict[str, Any]],
                           rollups: Counter, documents: Counter) -> None:
    rollups.update(compliance.settle_in_memory(docs))
    documents.update(compliance.documents_in_memory(docs))
    report.compliance_docs += len(docs)
    await sink.add(compliance_model.COLLECTION, list(docs.values()))


async def _social(maker: HistoryMaker, branch: Branch, meeting: dict[str, Any], sink: _Sink,
                  report: HistoryReport) -> None:
    found = maker.comments(branch, meeting)
    report.comments += len(found)
    await sink.add(comments_model.COLLECTION, found)
    vote, ballots, voters = maker.vote(branch, meeting)
    if vote is not None:
        report.votes += 1
        report.ballots += len(ballots)
        await sink.add(votes_model.COLLECTION, [vote])
        await sink.add(votes_model.BALLOTS, ballots)
        await sink.add(votes_model.VOTERS, voters)
