"""PostgreSQL to and from Arrow over binary COPY, through the ADBC PostgreSQL driver.

psycopg hands rows over as Python tuples, which then become Arrow arrays: for
a million rows that is most of an extract's time. The ADBC driver
(``adbc-driver-postgresql``) reads ``COPY (query) TO STDOUT (FORMAT binary)``
straight into Arrow record batches, and its bulk ingest writes Arrow batches
with ``COPY … FROM STDIN (FORMAT binary)``, both in C. No Python object is
made per row or per value.

The postgres nodes take this path only when every column is of a type whose
values come out exactly as through psycopg (:data:`ARROW_READABLE_OIDS`,
:func:`arrow_writable`); anything else takes the psycopg path, so a table's
values, types and fingerprint do not depend on which path read or wrote it.

Connections are pooled per process and URL like psycopg's
(:mod:`backends.nodes.connections`). The driver is imported when a node first
connects, not when figway imports its node types.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import pyarrow as pa
import pyarrow.compute as pc

from backends.model.errors import NodeFailedError
from backends.nodes.connections import (
    ConnectionPool,
    DatabaseUrl,
    pool_for,
    refuse_unsafe_options,
)

if TYPE_CHECKING:
    from adbc_driver_manager import dbapi

__all__ = [
    "ARROW_READABLE_OIDS",
    "adbc_connection",
    "adbc_failure",
    "arrow_readable",
    "arrow_writable",
    "conform",
    "from_driver",
    "refuse_nul_characters",
    "slices",
]

#: Type OIDs (pg_type) the driver reads into the same values as psycopg does: bool, bytea,
#: name, int8, int2, int4, text, float4, float8, bpchar, varchar, date, time, timestamp,
#: timestamptz, numeric. (oid comes back as a signed int32, uuid and json as extension
#: types, interval as a month-day-nano interval: those take the psycopg path.)
ARROW_READABLE_OIDS = frozenset(
    {16, 17, 19, 20, 21, 23, 25, 700, 701, 1042, 1043, 1082, 1083, 1114, 1184, 1700}
)
#: How long a message from the driver may get before it is cut (it quotes the query).
_MESSAGE_CHARS = 2_000


def arrow_readable(type_oids: Sequence[int]) -> bool:
    """Whether a result with columns of these types can be read over binary COPY."""
    return all(oid in ARROW_READABLE_OIDS for oid in type_oids)


def arrow_writable(schema: pa.Schema) -> bool:
    """Whether the driver's bulk ingest writes every column of ``schema`` as the CSV path
    would (nested, unsigned and dictionary columns take the CSV path)."""
    return all(_writable(field.type) for field in schema)


#: The Arrow types the driver's bulk ingest writes as the CSV path would.
_WRITABLE: tuple[Callable[[pa.DataType], bool], ...] = (
    pa.types.is_boolean,
    pa.types.is_integer,
    pa.types.is_float32,
    pa.types.is_float64,
    pa.types.is_decimal128,
    pa.types.is_date32,
    pa.types.is_time64,
    pa.types.is_timestamp,
    pa.types.is_duration,
    pa.types.is_string,
    pa.types.is_large_string,
    pa.types.is_binary,
    pa.types.is_large_binary,
)


def _writable(kind: pa.DataType) -> bool:
    if pa.types.is_unsigned_integer(kind):
        return False
    return any(is_kind(kind) for is_kind in _WRITABLE)


# -- connections -----------------------------------------------------------------------


def _driver_uri(url: str, parsed: DatabaseUrl, timeout: float) -> str:
    """libpq's URI for ``url``, with only what the URL says: never the worker's own
    ~/.pgpass or PGPASSWORD (an empty password and no password file).

    >>> url = "postgresql://etl@db:5433/sales?sslmode=require"
    >>> _driver_uri(url, DatabaseUrl.parse(url, schemes=("postgresql",)), 2.4)
    'postgresql://etl@db:5433/sales?sslmode=require&passfile=%2Fdev%2Fnull%2Fnone&connect_timeout=2&password='
    """
    base = "postgresql://" + url.split("://", 1)[1]
    # A path under /dev/null can never exist: libpq reads no password file, silently
    # (it warns on stderr about /dev/null itself, which is not a plain file).
    no_file = os.path.join(os.devnull, "none")
    extra = {"passfile": no_file, "connect_timeout": str(max(1, round(timeout)))}
    if parsed.password is None and "password" not in parsed.options:
        extra["password"] = ""
    separator = "&" if "?" in base else "?"
    return base + separator + urlencode(extra)


def _alive(connection: dbapi.Connection) -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchall()
        connection.rollback()
    except Exception:
        return False
    return True


@contextmanager
def adbc_connection(url: str, timeout: float) -> Iterator[dbapi.Connection]:
    """A pooled driver connection to ``url``, in a transaction the caller ends; on
    anything raised it is closed, not pooled."""
    parsed = DatabaseUrl.parse(url, schemes=("postgresql", "postgres"))
    described = parsed.describe()
    refuse_unsafe_options(parsed)

    def connect() -> dbapi.Connection:
        import adbc_driver_postgresql.dbapi as postgresql

        try:
            connection: dbapi.Connection = postgresql.connect(_driver_uri(url, parsed, timeout))
        except Exception as exc:
            raise NodeFailedError(
                f"cannot connect to PostgreSQL at {described}: {driver_message(exc)}"
            ) from None
        return connection

    pool = pool_for(
        "postgresql-adbc",
        url,
        lambda: ConnectionPool(connect, close=lambda c: c.close(), alive=_alive),
        timeout,
    )
    with pool.connection() as connection:
        yield connection


#: What libpq says when the connection went away (a batch read mid-stream carries no
#: SQLSTATE, only the words).
_LOST = ("server closed the connection", "connection to server", "no connection to the server")


def adbc_failure(exc: Exception, described: str) -> NodeFailedError:
    """A driver error as people read it, like the psycopg path's. Errors while batches
    stream in reach Python as Arrow errors without a SQLSTATE: their words tell."""
    message = driver_message(exc)
    state = str(getattr(exc, "sqlstate", "") or "")
    text = str(exc)
    if state == "57014" or (not state and "canceling statement" in text):
        return NodeFailedError(f"PostgreSQL at {described} cancelled the query: {message}")
    if state.startswith("08") or (not state and any(words in text for words in _LOST)):
        return NodeFailedError(f"lost the connection to PostgreSQL at {described}: {message}")
    return NodeFailedError(f"PostgreSQL at {described} refused it: {message}")


def from_driver(exc: BaseException) -> bool:
    """Whether an exception is the driver's (or libpq's, through Arrow's stream)."""
    from adbc_driver_manager import dbapi

    return isinstance(exc, dbapi.Error) or "[libpq]" in str(exc)


def driver_message(exc: BaseException) -> str:
    """The server's own words from a driver error (``ERROR:  …``), else its first line."""
    text = str(exc)
    found = re.search(r"ERROR:\s+(.+)", text)
    if found:
        return found.group(1).strip()[:_MESSAGE_CHARS]
    lines = text.strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:_MESSAGE_CHARS]


# -- batches -----------------------------------------------------------------------------


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """A driver batch as ``schema`` (the psycopg path's types): numerics arrive as text
    in an extension type and become decimals or floats; the rest casts as is."""
    arrays = []
    for field, column in zip(schema, batch.columns, strict=True):
        if isinstance(column.type, pa.ExtensionType):
            column = column.storage
        if column.type != field.type:
            try:
                column = column.cast(field.type)
            except (pa.ArrowException, ValueError) as exc:
                raise NodeFailedError(
                    f"column {field.name!r} does not fit {field.type}: {exc}; cast it in the query"
                ) from None
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def slices(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """The batches again, in batches of exactly ``rows`` rows but the last.

    The driver cuts its batches by bytes: pieces of its batches are views, and only the
    rows that straddle two of them are copied, to join them.
    """
    left: pa.RecordBatch | None = None  # fewer than ``rows`` rows, waiting for more
    for batch in batches:
        start = 0
        if left is not None:
            start = min(rows - left.num_rows, batch.num_rows)
            joined = pa.Table.from_batches([left, batch.slice(0, start)]).combine_chunks()
            left = joined.to_batches()[0] if joined.num_rows else None
            if left is not None and left.num_rows == rows:
                yield left
                left = None
        while batch.num_rows - start >= rows:
            yield batch.slice(start, rows)
            start += rows
        if start < batch.num_rows:
            left = batch.slice(start)
    if left is not None and left.num_rows:
        yield left


def refuse_nul_characters(batch: pa.RecordBatch) -> None:
    """PostgreSQL text cannot hold the character U+0000: fail naming the column, rather
    than let the server refuse "invalid byte sequence" halfway through a COPY."""
    for field, column in zip(batch.schema, batch.columns, strict=True):
        if not (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)):
            continue
        if pc.any(pc.match_substring(column, "\x00")).as_py():
            raise NodeFailedError(
                f"column {field.name!r} holds text with a NUL character (U+0000), which "
                "PostgreSQL text cannot store; remove it upstream (replace(col, chr(0), '') "
                "in a sql_transform) or load the column as bytes"
            )


def batch_stream(
    schema: pa.Schema,
    batches: Iterator[pa.RecordBatch],
    on_batch: Callable[[pa.RecordBatch], None],
) -> tuple[pa.RecordBatchReader, list[BaseException]]:
    """``batches`` as a reader the driver pulls from, calling ``on_batch`` on each first.

    An exception raised while the driver pulls reaches the caller wrapped in the driver's
    own error; it is kept in the returned list, so the caller can raise it as it was.
    """
    raised: list[BaseException] = []

    def pulled() -> Iterator[pa.RecordBatch]:
        try:
            for batch in batches:
                on_batch(batch)
                yield batch
        except BaseException as exc:
            raised.append(exc)
            raise

    return pa.RecordBatchReader.from_batches(schema, pulled()), raised


def first_raised(raised: list[BaseException], otherwise: Any) -> BaseException:
    """What to raise after a failed ingest: the exception a batch raised, if any."""
    return raised[0] if raised else otherwise
