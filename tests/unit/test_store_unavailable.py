"""Which database errors mean "unreachable, wait" (StoreUnavailableError) and which do not."""

from __future__ import annotations

import sqlite3

import psycopg
from sqlalchemy.exc import OperationalError

from backends.store.transactions import is_disconnect


def test_a_connection_that_cannot_be_made_is_unreachable() -> None:
    refused = psycopg.OperationalError("connection refused")  # no SQLSTATE: never connected
    assert is_disconnect(OperationalError("SELECT 1", {}, refused))


def test_a_server_shutting_down_is_unreachable() -> None:
    error = OperationalError("SELECT 1", {}, psycopg.errors.AdminShutdown("terminating"))
    assert is_disconnect(error)


def test_a_broken_connection_is_unreachable() -> None:
    error = OperationalError("SELECT 1", {}, Exception("lost"), connection_invalidated=True)
    assert is_disconnect(error)


def test_a_refused_statement_is_not() -> None:
    deadlock = psycopg.errors.DeadlockDetected("deadlock detected")
    assert not is_disconnect(OperationalError("UPDATE", {}, deadlock))
    assert not is_disconnect(OperationalError("UPDATE", {}, sqlite3.OperationalError("locked")))
