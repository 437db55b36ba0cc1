"""Session stores for ``session.py``: SQLiteStore, ShelveStore, RedisStore, MongoStore, PostgresStore.

``from stores import SQLiteStore`` imports only that store's module, on first
use, so ``import stores`` never imports redis, pymongo or psycopg: a store whose driver
is missing raises ImportError (naming the pip package) only when it is used.
Each store module imports nothing but ``session`` and its driver, so one of
them can also be vendored next to ``session.py`` on its own.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the names are, for type checkers; at run time, __getattr__ below
    from .mongo_store import MongoStore
    from .postgres_store import PostgresStore
    from .redis_store import RedisStore
    from .shelve_store import ShelveStore
    from .sqlite_store import SQLiteStore

__all__ = ["SQLiteStore", "ShelveStore", "RedisStore", "MongoStore", "PostgresStore"]

_MODULES = {
    "SQLiteStore": "sqlite_store",
    "ShelveStore": "shelve_store",
    "RedisStore": "redis_store",
    "MongoStore": "mongo_store",
    "PostgresStore": "postgres_store",
}


def __getattr__(name: str) -> Any:
    """Import the store's module the first time one of the names above is used (PEP 562)."""
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    store = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = store  # later look-ups skip this function
    return store


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
