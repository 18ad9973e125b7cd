"""The audit log speaks Chinese: every action the code writes is declared by its capability,
and the page shows labels, names and translated values, never the code's own words, raw
ids or personal data; ids are named with one query per kind for the whole page."""

from __future__ import annotations

import ast
import csv
import io
import re
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from pymongo import monitoring

from models import audit as audit_model
from tests.conftest import ADMIN_PASSWORD, actor_of
from tests.factories import member_fields
from tests.meetings_helpers import plan_fields
from wxbackend.capability import Capability, Registry
from wxbackend.context import AppContext
from wxbackend.errors import DomainError
from wxbackend.services import meetings, orgs
from wxbackend.services.accounts import audit
from wxbackend.services.accounts.access import Actor
from wxbackend.services.accounts.audit_labels import SYSTEM_ACTORS, AuditAction
from wxbackend.services.accounts.audit_view import detail_spec
from wxbackend.services.orgs import binding, importer, members
from wxbackend.services.orgs.import_sheet import COLUMNS

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("wxbackend", "handlers")
WRITER = "wxbackend/services/accounts/audit.py"  # the one place that inserts entries
# Calls whose details are built at run time (not a dict literal): the keys each may write,
# read from the code; the page test below writes both and checks how they read.
DYNAMIC_DETAILS = {
    ("wxbackend/services/orgs/__init__.py", "org.update"): {"term_start", "term_years", "category"},
    ("wxbackend/services/orgs/import_writes.py", "member.import"): {
        "created", "updated", "unchanged", "moved_out", "file"},
}


# -- reading the code for what it writes --------------------------------------------------

@dataclass
class Write:
    where: str
    actions: set[str] | None       # None: not a literal the scan can read
    target_types: set[str] | None
    detail_keys: set[str] | None   # None: built at run time


def _strings(node: ast.AST | None) -> set[str] | None:
    """Every string an expression of literals can be: "a", "a" + ("b" if x else "c")."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        body, orelse = _strings(node.body), _strings(node.orelse)
        return body | orelse if body is not None and orelse is not None else None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _strings(node.left), _strings(node.right)
        return {a + b for a in left for b in right} if left is not None and right is not None else None
    return None


def _argument(call: ast.Call, index: int, name: str) -> ast.AST | None:
    if len(call.args) > index:
        return call.args[index]
    return next((k.value for k in call.keywords if k.arg == name), None)


def _detail_keys(node: ast.AST | None) -> set[str] | None:
    if node is None:
        return set()
    if isinstance(node, ast.Dict) and all(isinstance(k, ast.Constant) for k in node.keys):
        return {k.value for k in node.keys}  # type: ignore[union-attr]
    return None


def audit_writes(source: str, where: str) -> tuple[list[Write], list[str]]:
    """The ``audit.record(...)`` calls of one module (under any alias of the audit module),
    and any other way it writes the log."""
    writes, other = [], []
    tree = ast.parse(source)
    # The names the audit module goes by here: `audit`, or an alias (`import audit as audit_log`).
    names = {"audit"} | {a.asname for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                         and (node.module or "").endswith("services.accounts")
                         for a in node.names if a.name == "audit" and a.asname}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("accounts.audit"):
            other += [f"{where}:{node.lineno}: imports {a.name} (call audit.record so the scan sees it)"
                      for a in node.names if a.name == "record"]
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        func = node.func
        if func.attr == "record" and isinstance(func.value, ast.Name) and func.value.id in names:
            writes.append(Write(f"{where}:{node.lineno}", _strings(_argument(node, 2, "action")),
                                _strings(_argument(node, 3, "target_type")),
                                _detail_keys(_argument(node, 7, "details"))))
        elif func.attr == "insert" and isinstance(func.value, ast.Name) and func.value.id == "audit_model" \
                and where != WRITER:
            other.append(f"{where}:{node.lineno}: writes the audit log around audit.record")
    return writes, other


def problems_of(registry: Registry, where: str, write: Write) -> list[str]:
    if write.actions is None:
        return [f"{where}: the action is not a literal string (write it out so it can be declared)"]
    if write.target_types is None:
        return [f"{where}: the target type is not a literal string"]
    found = [f"{where}: target type {t!r} is declared by no capability (AuditSubject)"
             for t in sorted(write.target_types) if t not in registry.audit_subjects]
    for name in sorted(write.actions):
        action = registry.audit_actions.get(name)
        if action is None:
            found.append(f"{where}: audit action {name!r} is declared by no capability (AuditAction)")
            continue
        file = where.rsplit(":", 1)[0]
        keys = write.detail_keys if write.detail_keys is not None else DYNAMIC_DETAILS.get((file, name))
        if keys is None:
            found.append(f"{where}: details of {name!r} are built at run time; list their keys in "
                         "DYNAMIC_DETAILS and declare each")
            continue
        found += [f"{where}: detail {key!r} of {name!r} has no label (Detail)"
                  for key in sorted(keys) if detail_spec(action, key) is None]
    return found


def scan(registry: Registry, source: str, where: str) -> tuple[list[Write], list[str]]:
    writes, problems = audit_writes(source, where)
    for write in writes:
        problems += problems_of(registry, write.where, write)
    return writes, problems


def sources() -> list[tuple[str, str]]:
    return [(str(p.relative_to(ROOT)), p.read_text(encoding="utf-8"))
            for folder in SCANNED for p in sorted((ROOT / folder).rglob("*.py"))]


def test_every_action_the_code_writes_is_declared_with_its_details(ctx):
    writes, problems = [], []
    for where, text in sources():
        found, wrong = scan(ctx.registry, text, where)
        writes += found
        problems += wrong
    assert not problems, "\n".join(problems)
    written = set().union(*(w.actions or set() for w in writes))
    # The scan reads what it should: the actions of the issue among some forty places.
    assert len(writes) >= 40 and {"meeting.create", "meeting.publish", "meeting.leave_approve",
                                  "meeting.leave_refuse", "member.unmask", "member.bind"} <= written


def test_the_scan_fails_on_what_a_careless_change_would_write(ctx):
    careless = '''
async def f(ctx, actor, m, ok, verb):
    await audit.record(ctx, actor, "meeting.teleport", "meeting", m, "t", [])
    await audit.record(ctx, actor, "meeting.leave_" + ("approve" if ok else "vanish"), "meeting", m, "t", [])
    await audit.record(ctx, actor, f"meeting.{verb}", "meeting", m, "t", [])
    await audit.record(ctx, actor, "meeting.publish", "spaceship", m, "t", [])
    await audit.record(ctx, actor, "meeting.publish", "meeting", m, "t", [], {"expected": 3, "warp": 9})
    await audit.record(ctx, actor, "member.bind", "member", m, "t", [], dict(channel="oa"))
    await audit_model.insert(ctx.db, {})
'''
    writes, problems = scan(ctx.registry, careless, "x.py")
    assert len(writes) == 6
    text = "\n".join(problems)
    for expected in ("'meeting.teleport' is declared by no", "'meeting.leave_vanish' is declared by no",
                     "x.py:5: the action is not a literal", "'spaceship' is declared by no",
                     "detail 'warp' of 'meeting.publish' has no label", "details of 'member.bind' are built",
                     "writes the audit log around audit.record"):
        assert expected in text
    assert "leave_approve" not in text and "'expected'" not in text
    _, problems = scan(ctx.registry, "from wxbackend.services.accounts.audit import record\n", "y.py")
    assert problems and "imports record" in problems[0]


def test_every_process_that_acts_has_a_chinese_name():
    names = set()
    for _, text in sources():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "system_actor" and node.args:
                assert isinstance(node.args[0], ast.Constant), ast.dump(node)
                names.add(node.args[0].value)
    assert "seed" in names
    assert not {n for n in names if n.isascii() and n not in SYSTEM_ACTORS}


def test_an_action_declared_twice_is_refused(settings):
    one = Capability(name="one", audit_actions=(AuditAction("x.do", "做"),))
    two = Capability(name="two", audit_actions=(AuditAction("x.do", "又做"),))
    with pytest.raises(ValueError, match=r"audit action of two: 'x\.do' is declared twice"):
        Registry((one, two), settings)


# -- the page ----------------------------------------------------------------------------

def table_of(html: str) -> str:
    return html[html.index("<table>"):html.index("</table>")]


def import_csv(fields: dict) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(list(COLUMNS.values()))
    writer.writerow([fields.get(code, "") for code in COLUMNS])
    return out.getvalue().encode("utf-8")


async def test_the_audit_page_reads_in_chinese_with_names(ctx, city, web):
    boss, sec = actor_of(city, "city"), actor_of(city, "sec_a1")
    fields = member_fields("赵审计")
    zhao = await members.create(ctx, sec, city.org("branch_a1"), fields)
    await members.unmask(ctx, actor_of(city, "east"), zhao["_id"])
    await binding.bind(ctx, "oa", "o-audit", None, fields["name"], fields["id_card"], fields["phone"], "10.0.0.9")
    general = await orgs.create(ctx, boss, city.org("district_a"), name="东区机关党总支",
                                org_type="general_branch", category="organ", code="DA-G")
    await orgs.move(ctx, boss, city.org("branch_a2"), general["_id"])
    await orgs.update_details(ctx, boss, city.org("branch_a1"), term_start="", term_years=3, category="school")
    meeting = await meetings.create(ctx, sec, city.org("branch_a1"), plan_fields(ctx.clock.now() + timedelta(days=2)))
    await meetings.publish(ctx, sec, meeting["_id"])
    await meetings.request_leave(ctx, zhao, meeting["_id"], "出差")
    await meetings.decide_leave(ctx, sec, meeting["_id"], zhao["_id"], True)
    await members.create(ctx, Actor.system_actor("seed"), city.org("branch_b1"), member_fields("演示党员"))
    imported = member_fields("导入党员")
    assert (await importer.import_file(ctx, sec, import_csv(imported), "名册.csv",
                                       target_org_id=city.org("branch_a1"))).ok
    # An entry written before processes were flagged: an id-less actor named "seed".
    await audit_model.insert(ctx.db, {"at": ctx.clock.now(), "actor": {"id": None, "name": "seed"}, "ip": "",
                                      "action": "org.dissolve", "target": {"type": "org", "id": general["_id"],
                                      "label": "旧组织"}, "org_id": general["_id"],
                                      "org_ancestors": general["org_ancestors"], "details": {}})

    await web.login("city", ADMIN_PASSWORD)
    page = await web.get(f"/admin/audit?org={city.org('root')}")
    assert page.status_code == 200
    table = table_of(page.text)
    for said in ("新增党员", "查看完整个人信息", "查看项：身份证号码、手机号码", "绑定微信", "渠道：公众号",
                 "赵审计（本人·公众号）", "调整隶属关系",
                 f'原上级组织：<a href="/admin/orgs/{city.org("district_a")}">东区区委</a>',
                 f'新上级组织：<a href="/admin/orgs/{general["_id"]}">东区机关党总支</a>',
                 "修改组织信息", "本届任期开始：未填写", "任期：3年", "组织类别：学校",
                 "新建会议", "发布会议", "应到：", "批准请假",
                 f'党员：<a href="/admin/members/{zhao["_id"]}">赵审计</a>',
                 "导入党员", "新增：1人；文件：名册.csv", "撤销组织", "新建组织", "组织类型：党总支"):
        assert said in table, said
    assert table.count("<td>系统（演示数据）</td>") == 2 and ">seed<" not in table
    for code in ctx.registry.audit_actions:
        assert code not in table, code
    for word in ("member_id", "fields", "channel", "'id_card'", ": oa", "term_years", "created",
                 "补录已召开的会议", "更新：0人"):  # codes, and lines that would say nothing
        assert word not in table, word
    # Ids only inside links; personal numbers nowhere.
    assert not re.search(r"[0-9a-f]{24}", re.sub(r'href="[^"]*"', "", table))
    for clear in (fields["id_card"], fields["phone"], imported["id_card"], imported["phone"]):
        assert clear not in page.text


# -- naming ids: once per page, within the viewer's scope ---------------------------------

class FindCounter(monitoring.CommandListener):
    def __init__(self) -> None:
        self.finds: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find":
            self.finds[event.command["find"]] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_ids_are_named_in_one_query_per_kind_and_only_within_scope(ctx, city, servers):
    sec, west = actor_of(city, "sec_a1"), actor_of(city, "west")
    people = [await members.create(ctx, sec, city.org("branch_a1"), member_fields(f"请假{i}")) for i in range(6)]
    meeting = await meetings.create(ctx, sec, city.org("branch_a1"), plan_fields(ctx.clock.now() + timedelta(days=2)))
    await meetings.publish(ctx, sec, meeting["_id"])
    for person in people:
        await meetings.request_leave(ctx, person, meeting["_id"], "出差")
        await meetings.decide_leave(ctx, sec, meeting["_id"], person["_id"], True)
    # A number registered in the west entered in the east: the entry lists the western member.
    western = member_fields("西区党员")
    await members.create(ctx, west, city.org("branch_b1"), western)
    with pytest.raises(DomainError):
        await members.create(ctx, actor_of(city, "east"), city.org("branch_a1"),
                             member_fields("重复录入", id_card=western["id_card"]))
    for code in ("DA-G1", "DA-G2"):
        general = await orgs.create(ctx, actor_of(city, "city"), city.org("district_a"), name=f"总支{code}",
                                    org_type="general_branch", category="organ", code=code)
        await orgs.move(ctx, actor_of(city, "city"), city.org("branch_a2"), general["_id"])

    counter = FindCounter()
    counted = await AppContext.connect(ctx.settings, servers.mongodb_uri, servers.redis_url,
                                       database=ctx.db.name, event_listeners=[counter],
                                       clock=ctx.clock, registry=ctx.registry)
    try:
        entries = await audit.page(counted, actor_of(city, "east"), city.org("district_a"))
    finally:
        await counted.close()
    assert len(entries) >= 10
    # members: the page's names in one query; organisations: the scope check and the names.
    assert counter.finds["members"] == 1 and counter.finds["organisations"] == 2
    assert counter.finds["audit_log"] == 1 and counter.finds["meetings"] == 0
    said = {(d.label, p.text) for e in entries for d in e.details for p in d.parts}
    assert {("党员", f"请假{i}") for i in range(6)} <= said
    assert ("已登记的党员", "1名不在您管辖范围内的党员") in said and ("其中不在本人管辖范围", "1人") in said
    assert "西区党员" not in {text for _, text in said}
    city_view = await audit.page(ctx, actor_of(city, "city"), city.org("district_a"))
    assert "西区党员" in {p.text for e in city_view for d in e.details for p in d.parts}
