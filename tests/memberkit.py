"""Helpers for tests of member lists: many members at once, and counting what a list reads."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import AsyncIterator
from datetime import date, timedelta

from pymongo import AsyncMongoClient, monitoring

from models import members as members_model
from models import orgs as orgs_model
from tests.factories import member_fields
from wxbackend.context import AppContext
from wxbackend.services.orgs import members

# A birth date per member made here (with the sequence number of member_fields, distinct
# ID-card numbers however many a test makes; all of them adults by 2010).
_days = itertools.count()


class DocsRead(monitoring.CommandListener):
    """Counts the member documents the database sends back: with SecantusDB (which
    reads everything a filter matches) and no limit on these queries, what it read."""

    def __init__(self) -> None:
        self.count = 0

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        cursor = event.reply.get("cursor") if event.command_name in ("find", "getMore") else None
        if cursor and cursor.get("ns", "").endswith(".members"):
            self.count += len(cursor.get("firstBatch", cursor.get("nextBatch", [])))

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@contextlib.asynccontextmanager
async def counting_reads(ctx: AppContext, servers) -> AsyncIterator[tuple[AppContext, DocsRead]]:
    """The same context over a client that counts the member documents it reads."""
    spy = DocsRead()
    client = AsyncMongoClient(servers.mongodb_uri, event_listeners=[spy])
    try:
        yield dataclasses.replace(ctx, mongo=client, db=client[ctx.db.name]), spy
    finally:
        await client.close()


async def fill_branch(ctx: AppContext, city, names: list[str], branch: str = "branch_a1") -> list[dict]:
    """Members straight into the collection (with their counters): hundreds in a second."""
    org = await orgs_model.get(ctx.db, city.org(branch))
    docs = [members.new_document(ctx, members.validate_fields(
                member_fields(name, birth=date(1960, 1, 1) + timedelta(days=next(_days) % 9000)),
                today=ctx.clock.today())[0], org)
            for name in names]
    await members_model.insert_many(ctx.db, docs)
    await orgs_model.adjust_member_counts(ctx.db, org["_id"], org["org_ancestors"], len(docs), len(docs))
    return docs
