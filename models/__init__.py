"""MongoDB collections: document shapes, indexes and queries.

One module a collection. Models know nothing of HTTP, WeChat or rules; they
are called by services. Every collection that belongs to an organisation
carries ``org_id`` and ``org_ancestors`` (the organisation's path from the
root, *including the organisation itself*), so "everything in my subtree" is
``{"org_ancestors": scope_id}`` on one multikey index, and registers itself in
:data:`SCOPED_COLLECTIONS` so that moving a subtree rewrites it.
"""

from __future__ import annotations

from typing import Any

from pymongo import IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

# collection name -> index models; each model module adds its own entry.
INDEXES: dict[str, list[IndexModel]] = {}

# Collections whose documents carry org_id + org_ancestors (with an index on
# org_id). Moving an organisation rewrites org_ancestors in each of them.
SCOPED_COLLECTIONS: list[str] = []


def register(collection: str, indexes: list[IndexModel], *, scoped: bool = False) -> None:
    INDEXES[collection] = indexes
    if scoped and collection not in SCOPED_COLLECTIONS:
        SCOPED_COLLECTIONS.append(collection)


async def update_if(collection: AsyncCollection, doc_id: Any, expected: dict[str, Any],
                    changes: dict[str, Any]) -> dict[str, Any] | None:
    """Apply ``changes`` only if the document still matches ``expected``.

    The state-machine step of every capability: a retry or a racing process
    that expects a state the document has already left matches nothing and
    changes nothing. Returns the document after the change, or None.

    This is ``update_one`` plus a read rather than ``find_one_and_update``:
    SecantusDB executes findAndModify by scanning the whole collection
    (measured 170-420 ms on 20,000 documents, against 1-3 ms for this), and the
    test suite refuses findAndModify for that reason.
    """
    result = await collection.update_one({"_id": doc_id, **expected}, changes)
    if result.matched_count == 0:
        return None
    return await collection.find_one({"_id": doc_id})


async def ensure_indexes(db: AsyncDatabase) -> None:
    # Importing the modules registers their indexes.
    from models import (  # noqa: F401
        audit,
        comments,
        compliance,
        meetings,
        members,
        notices,
        notifications,
        notify_batches,
        notify_grants,
        notify_messages,
        notify_stats,
        orgs,
        users,
        votes,
    )

    for name, indexes in INDEXES.items():
        if indexes:
            await db[name].create_indexes(indexes)
