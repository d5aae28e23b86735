"""API keys for tests: made straight in the gateway's database, as `figway keys create` does."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from backends.store import create_database_engine
from backends.store.api_keys import ApiKeys, NewKey

__all__ = ["api_keys", "one_key_per_scope"]


@contextmanager
def api_keys(database_url: str) -> Iterator[ApiKeys]:
    """The key store of the database at ``database_url``, its engine closed afterwards."""
    engine = create_database_engine(database_url)
    try:
        yield ApiKeys(engine)
    finally:
        engine.dispose()


def one_key_per_scope(database_url: str, *scopes: str, name: str = "test") -> dict[str, NewKey]:
    """A key for each scope, holding that scope alone, by scope."""
    with api_keys(database_url) as store:
        return {
            scope: store.create(name=f"{name} {scope}", scopes=[scope], created_by="test")
            for scope in scopes
        }
