"""The shared services every test session talks to, and keeping them clean around a test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from sqlalchemy import Engine

from backends.store.models import Base

__all__ = ["REDIS_TEST_URL", "empty_tables", "flushed_redis"]

#: The logical Redis database tests use: flushed before and after each use. Sessions that
#: run beside each other (several checkouts on one machine) each set their own.
REDIS_TEST_URL = os.environ.get("FIGWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")


@contextmanager
def flushed_redis(url: str = REDIS_TEST_URL) -> Iterator[str]:
    """``url``'s database, empty on the way in and on the way out."""
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {url} ({exc}); run `make services`")
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


def empty_tables(engine: Engine) -> None:
    """Delete every row of figway's tables (children first), keeping the schema."""
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())
