"""The demo city's year of meetings: the data contract, compliance equal to a replay,
variety of branches, anonymity, determinism, and the full-scale figures."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, date, datetime

import pytest
from bson import ObjectId

from models import comments as comments_model
from models import compliance as compliance_model
from models import meetings as meetings_model
from models import orgs as orgs_model
from models import votes as votes_model
from wxbackend.clock import SHANGHAI
from wxbackend.context import AppContext
from wxbackend.demo import city, seed, seed_history
from wxbackend.services.accounts.access import Actor
from wxbackend.services.meetings import compliance

SCALE = 0.003
TODAY = date(2026, 3, 18)
MONTHS = seed_history.window(TODAY)
CITY = Actor.system_actor("tests")


def quiet(message: str) -> None:
    pass


async def everything(ctx: AppContext, name: str, key: str = "org_ancestors") -> list[dict]:
    root = (await orgs_model.roots(ctx.db))[0]["_id"]
    if key == "org_ancestors":
        return await ctx.db[name].find({"org_ancestors": root}).to_list()
    return await ctx.db[name].find({key: {"$gte": ""}}).to_list()


@pytest.fixture
async def seeded(ctx):
    report = await seed.seed_city(ctx, SCALE, today=TODAY, progress=quiet)
    return report, await everything(ctx, meetings_model.COLLECTION)


async def test_meetings_follow_the_data_contract(ctx, seeded):
    report, found = seeded
    assert report.phases["history"] > 0 and len(found) > 20 * 30
    shape = set(meetings_model.new_meeting({"_id": 1, "org_ancestors": []}, "other", "t",
                                           ctx.clock.now(), ctx.clock.now(), {}, SHANGHAI,
                                           now=ctx.clock.now()))
    cutoff = datetime(2026, 3, 18, tzinfo=SHANGHAI)
    for m in found:
        assert set(m) == shape | {"attendance"} and m["counts_live"] is False, m["_id"]  # settled
        assert m["status"] in ("finished", "cancelled") and m["end"] < cutoff
        assert m["month"] == meetings_model.month_of(m["start"], SHANGHAI) and m["month"] in MONTHS
        assert m["expected_count"] == len(m["expected"]) and m["org_ancestors"][-1] == m["org_id"]
        statuses = Counter(mark["status"] for mark in m["attendance"].values())
        assert {k: statuses.get(k, 0) for k in ("present", "online", "excused")} == m["counts"]
        assert {ObjectId(k) for k in m["attendance"]} <= set(m["expected"])
        assert set(m["leave"]) == {k for k, v in m["attendance"].items() if v["status"] == "excused"}
        if m["status"] == "cancelled":
            assert not m["attendance"] and m["cancelled_at"]
    kinds = Counter(m["type"] for m in found)
    assert {"theme_day", "committee", "branch_assembly", "lecture", "life_meeting"} <= set(kinds)
    assert sum(1 for m in found if m["minutes"]) > 0.8 * len(found)


async def test_compliance_equals_a_replay_of_every_meeting_finishing(ctx, seeded):
    _, found = seeded
    seeded_docs = {d["_id"]: d for d in await everything(ctx, compliance_model.COLLECTION, "month")}
    # The roll-ups the seed wrote are those its compliance documents give.
    stored = await everything(ctx, compliance_model.ROLLUPS, "month")
    for month in MONTHS:
        rebuilt = await compliance.rebuild_rollups(ctx, month)
        assert {d["org_id"]: d["compliant"] for d in stored if d["month"] == month} == rebuilt, month
    # Each branch's documents are what meeting_finished would have written.
    branches = sorted({m["org_id"] for m in found})
    chosen = set(random.Random(7).sample(branches, 8))
    await ctx.db[compliance_model.COLLECTION].delete_many({"org_id": {"$in": list(chosen)}})
    for meeting in found:
        if meeting["org_id"] in chosen and meeting["status"] == "finished":
            await compliance.meeting_finished(ctx, meeting)
    replayed = [d for d in await everything(ctx, compliance_model.COLLECTION, "month") if d["org_id"] in chosen]
    # Months without a counted meeting have their (empty) document from the month's opening.
    counted = [d for d in seeded_docs.values() if d["org_id"] in chosen
               and (d["meetings"] or d.get("quarter_meetings") or d.get("year_meetings"))]
    assert replayed and len(replayed) == len(counted)
    for doc in replayed:
        assert _without_rev(doc) == _without_rev(seeded_docs[doc["_id"]]), doc["_id"]


def _without_rev(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "rev"}


async def test_branches_differ_and_committees_see_both_kinds(ctx, seeded):
    _, found = seeded
    root = (await orgs_model.roots(ctx.db))[0]
    last_full = MONTHS[-2]
    summary = await compliance.committee_summary(ctx, CITY, root["_id"], last_full)
    assert 0 < summary.compliant < summary.branches and summary.failing_children
    held = Counter((m["org_id"], m["month"]) for m in found if m["status"] == "finished")
    branches = {m["org_id"] for m in found}
    # Some branches hold something every month, some have months without any meeting.
    assert any(all(held[(b, mo)] for mo in MONTHS[:-1]) for b in branches)
    assert any(not held[(b, mo)] for b in branches for mo in MONTHS[:-1])
    rates = [d["attended_sum"] / (d["expected_sum"] - d["excused_sum"])
             for d in await everything(ctx, compliance_model.COLLECTION, "month")
             if d["expected_sum"] > d["excused_sum"]]
    assert min(rates) < 0.75 < max(rates)


async def test_comments_and_votes_come_from_attendees_and_anonymous_ballots_name_nobody(ctx, seeded):
    _, found = seeded
    by_id = {m["_id"]: m for m in found}
    ids = list(by_id)
    notes = await ctx.db[comments_model.COLLECTION].find({"meeting_id": {"$in": ids}}).to_list()
    assert notes
    for note in notes:
        mark = by_id[note["meeting_id"]]["attendance"][str(note["member_id"])]
        assert mark["status"] in ("present", "online") and note["at"] > by_id[note["meeting_id"]]["end"]
    visible = Counter(n["meeting_id"] for n in notes if not n["hidden"])
    assert all(m["comment_count"] == visible[m["_id"]] for m in found)
    polls = await ctx.db[votes_model.COLLECTION].find({"meeting_id": {"$in": ids}}).to_list()
    assert polls and any(v["anonymous"] for v in polls) and any(not v["anonymous"] for v in polls)
    for vote in polls:
        ballots = await votes_model.named_ballots(ctx.db, vote["_id"])
        assert vote["status"] == "closed" and vote["ballots"] == len(ballots) == sum(vote["counts"])
        if vote["anonymous"]:
            assert all(set(b) == {"_id", "vote_id", "choices"} for b in ballots)
            voters = await ctx.db[votes_model.VOTERS].count_documents({"vote_id": vote["_id"]})
            assert voters == len(ballots)


def _synthetic_year(scale: float, rng_seed: int = 0) -> tuple[seed_history.HistoryReport, list[tuple]]:
    """The generator alone, over a planned city with made-up member ids (no database)."""
    specs = city.plan_city(scale, TODAY)
    rules = compliance.Rules(("committee", "group", "theme_day"), ("branch_assembly", "lecture"),
                             ("life_meeting",), 7)
    maker = seed_history.HistoryMaker(random.Random(seed_history.SEED), rules, MONTHS,
                                      datetime(2026, 3, 18, tzinfo=UTC))
    report, trace, ids = seed_history.HistoryReport(MONTHS), [], random.Random(rng_seed)
    for spec in (s for s in specs if s.kind == "branch"):
        people = [{"_id": ObjectId(ids.randbytes(12)), "name": "党员"} for _ in range(spec.size)]
        for p in people:
            p["key"] = str(p["_id"])
        committee = people[:4] if spec.size >= 7 else []
        name, hold, presence, stop = maker.profile(spec.doc, people)
        branch = seed_history.Branch(spec.doc, people, {}, committee, name, hold, presence, stop)
        report.profiles[name] += 1
        for kind, index, audience in maker.plan(branch):
            meeting = maker.meeting(branch, kind, index, audience)
            if meeting is not None:
                report.meetings += 1
                report.marks += len(meeting["attendance"])
                trace.append((spec.code, kind, meeting["start"], meeting["status"], len(meeting["attendance"])))
    return report, trace


def test_the_same_city_gives_the_same_history():
    assert _synthetic_year(0.003)[1] == _synthetic_year(0.003)[1]


def test_full_scale_figures_extrapolate_to_the_citys_own():
    """~300,000 meetings and ~4 million marks a year at 1.0, from a 5% city."""
    report, _ = _synthetic_year(0.05)
    branches = city.scaled_counts(1.0)["branch"] / city.scaled_counts(0.05)["branch"]
    yearly = 12 / (len(MONTHS) - 1 + 17 / 31)  # the window's last month runs to the 18th only
    assert 260_000 < report.meetings * branches * yearly < 340_000
    assert 3_500_000 < report.marks * branches * yearly < 4_800_000
    assert set(report.profiles) == {"diligent", "sloppy", "lagging", "dormant"}
