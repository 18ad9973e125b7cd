"""MongoDB collections: document shapes, indexes and queries.

One module a collection. Models know nothing of HTTP, WeChat or rules; they
are called by services. Every collection that belongs to an organisation
carries ``org_id`` and ``org_ancestors`` (the organisation's path from the
root, *including the organisation itself*), so "everything in my subtree" is
``{"org_ancestors": scope_id}`` on one multikey index, and registers itself in
:data:`SCOPED_COLLECTIONS` so that moving a subtree rewrites it.
"""

from __future__ import annotations

from pymongo import IndexModel
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


async def ensure_indexes(db: AsyncDatabase) -> None:
    # Importing the modules registers their indexes.
    from models import audit, members, orgs, users  # noqa: F401

    for name, indexes in INDEXES.items():
        if indexes:
            await db[name].create_indexes(indexes)
