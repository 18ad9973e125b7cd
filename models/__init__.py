"""MongoDB collections: document shapes, indexes and queries.

One module a collection. Models know nothing of HTTP, WeChat or rules; they
are called by services. Every collection that belongs to an organisation
carries ``org_id`` and ``org_ancestors`` (the organisation's path from the
root, *including the organisation itself*), so "everything in my subtree" is
``{"org_ancestors": scope_id}`` on one multikey index.

A model module declares its collections' indexes as ``INDEXES`` (collection ->
index models) and the collections that carry ``org_ancestors`` as ``SCOPED``, so
that moving a subtree rewrites them; the capability that owns the module lists it
(``Capability.models``), and :func:`ensure_indexes` creates what the installed
capabilities declare.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import ModuleType
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase


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


async def ensure_indexes(db: AsyncDatabase, modules: Iterable[ModuleType]) -> None:
    """Create the indexes the model modules declare (``INDEXES``: collection -> index models)."""
    for module in modules:
        for name, indexes in module.INDEXES.items():
            if indexes:
                await db[name].create_indexes(indexes)
