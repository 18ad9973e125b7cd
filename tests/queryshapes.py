"""Record every query shape the code issues and check each with ``explain``.

A pymongo command listener sees each command; its filter is reduced to a
shape (field names and operators, values replaced by their type). The first
command of each new shape is explained against the real server before the
test's database is dropped, and any COLLSCAN fails the test. SecantusDB's
explain of update/delete commands does not report the plan, so those are
explained as the equivalent find.

Two facts of SecantusDB measured on 20,000 documents shape the rules:
``findAndModify`` scans the whole collection whatever its filter (170-420 ms
against 1-3 ms for ``update_one``), so it is refused outright; and a filter
with an equality on ``_id`` runs as a point lookup (1-3 ms) although explain
reports COLLSCAN when other fields are present, so such filters pass.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pymongo import monitoring

QUERY_COMMANDS = ("find", "count", "aggregate", "findAndModify", "update", "delete", "distinct")


def shape(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, shape(v) if k.startswith("$") or isinstance(v, dict) else _kind(v))
                            for k, v in value.items()))
    if isinstance(value, list):
        return tuple(sorted({repr(shape(v)) for v in value}))
    return _kind(value)


def _kind(value: Any) -> str:
    if isinstance(value, dict | list):
        return repr(shape(value))
    return type(value).__name__


def finds_of(name: str, command: dict[str, Any]) -> list[tuple[str, dict, dict | None]]:
    """(collection, filter, sort) triples a command reads with."""
    coll = command[name]
    if name == "find":
        return [(coll, command.get("filter", {}), command.get("sort"))]
    if name in ("count", "distinct"):
        return [(coll, command.get("query", {}), None)]
    if name == "findAndModify":
        return [(coll, command.get("query", {}), command.get("sort"))]
    if name == "update":
        return [(coll, u.get("q", {}), None) for u in command.get("updates", [])]
    if name == "delete":
        return [(coll, d.get("q", {}), None) for d in command.get("deletes", [])]
    if name == "aggregate":
        pipeline = command.get("pipeline", [])
        first = pipeline[0] if pipeline else {}
        return [(coll, first.get("$match", {}), None)]
    return []


class QueryRecorder(monitoring.CommandListener):
    """Collects new query shapes; ``seen`` is shared across the test session."""

    seen: ClassVar[set[tuple]] = set()

    def __init__(self) -> None:
        self.pending: list[tuple[str, str, dict, dict | None]] = []
        self.refused: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        if name not in QUERY_COMMANDS or not isinstance(event.command.get(name), str):
            return
        if name == "findAndModify":
            self.refused.append(f"{event.command[name]}: findAndModify scans the whole collection "
                                "in SecantusDB; use models.update_if (update_one + read)")
            return
        for coll, flt, sort in finds_of(name, event.command):
            key = (coll, shape(flt), shape(sort or {}))
            if key not in QueryRecorder.seen:
                QueryRecorder.seen.add(key)
                self.pending.append((event.database_name, coll, flt, sort))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def plan_stages(plan: Any) -> list[str]:
    stages = []
    if isinstance(plan, dict):
        if "stage" in plan:
            stages.append(plan["stage"])
        for value in plan.values():
            stages.extend(plan_stages(value))
    elif isinstance(plan, list):
        for value in plan:
            stages.extend(plan_stages(value))
    return stages


async def check_pending(client: Any, recorder: QueryRecorder) -> list[str]:
    """Explain each pending query; return descriptions of collection scans."""
    scans = list(recorder.refused)
    recorder.refused.clear()
    while recorder.pending:
        db_name, coll, flt, sort = recorder.pending.pop()
        if _is_point_lookup(flt):
            continue
        cursor = client[db_name][coll].find(flt)
        if sort:
            cursor = cursor.sort(list(sort.items()))
        explained = await cursor.explain()
        if "COLLSCAN" in plan_stages(explained.get("queryPlanner", {}).get("winningPlan")):
            scans.append(f"{coll}: filter={flt!r} sort={sort!r}")
    return scans


def _is_point_lookup(flt: dict) -> bool:
    value = flt.get("_id")
    return value is not None and not isinstance(value, dict)
