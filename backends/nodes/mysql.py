"""``mysql_extract``: a query on MySQL or MariaDB into a table output.

Rows are read unbuffered (PyMySQL's ``SSCursor``: the server streams them and
the client holds one batch), ``batch_size`` at a time, inside a read-only
transaction, and written to the artifact store batch by batch.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pyarrow as pa
import pymysql
import pymysql.cursors
from pydantic import Field
from pymysql.constants import FIELD_TYPE

from backends.model.errors import NodeFailedError
from backends.nodes.base import NodeContext, NodeType
from backends.nodes.connections import (
    ConnectionConfig,
    ConnectionPool,
    DatabaseUrl,
    pool_for,
    refuse_unsafe_options,
)
from backends.nodes.tables import (
    Converter,
    Progress,
    QueryConfig,
    bind_parameters,
    write_query_result,
)

__all__ = ["MYSQL_EXTRACT", "MysqlExtractConfig"]

_SCHEMES = ("mysql", "mariadb")
#: The character set number MySQL reports for binary strings and BLOBs.
_BINARY_CHARSET = 63


class MysqlExtractConfig(ConnectionConfig, QueryConfig):
    SCHEMES = _SCHEMES

    read_timeout_seconds: float = Field(
        default=3_600, gt=0, le=86_400, description="Give up when the server is silent this long."
    )


def _alive(connection: pymysql.connections.Connection[Any]) -> bool:
    try:
        connection.ping(reconnect=False)
    except pymysql.MySQLError:
        return False
    return True


@contextmanager
def _connection(
    url: str, config: MysqlExtractConfig
) -> Iterator[pymysql.connections.Connection[Any]]:
    parsed = DatabaseUrl.parse(url, schemes=_SCHEMES)
    described = parsed.describe()
    refuse_unsafe_options(parsed)

    def connect() -> pymysql.connections.Connection[Any]:
        try:
            return pymysql.connect(
                host=parsed.host,
                port=parsed.port or 3306,
                user=parsed.user or "",
                password=parsed.password or "",
                database=parsed.database,
                charset=parsed.options.get("charset", "utf8mb4"),
                connect_timeout=max(1, round(config.connect_timeout_seconds)),
                read_timeout=round(config.read_timeout_seconds),
                cursorclass=pymysql.cursors.SSCursor,
            )
        except pymysql.MySQLError as exc:
            raise NodeFailedError(
                f"cannot connect to MySQL at {described}: {_message(exc)}"
            ) from None

    pool = pool_for(
        "mysql",
        url,
        lambda: ConnectionPool(connect, close=lambda c: c.close(), alive=_alive),
        config.connect_timeout_seconds,
        config.read_timeout_seconds,
    )
    try:
        with pool.connection() as connection:
            yield connection
    except pymysql.MySQLError as exc:
        if _connection_lost(exc):
            raise NodeFailedError(
                f"lost the connection to MySQL at {described}: {_message(exc)}"
            ) from None
        raise NodeFailedError(f"MySQL at {described} refused it: {_message(exc)}") from None


def _connection_lost(exc: pymysql.MySQLError) -> bool:
    """Client errors (codes 2000-2999: server gone, lost, closed) are the connection's.

    PyMySQL raises OperationalError for many plain server refusals too, so the class
    alone does not tell.
    """
    if isinstance(exc, pymysql.err.InterfaceError):
        return True
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    return code is not None and 2000 <= code < 3000


def _message(exc: pymysql.MySQLError) -> str:
    # PyMySQL errors are (code, message) pairs.
    if len(exc.args) >= 2:
        return f"{exc.args[1]} (error {exc.args[0]})"
    return str(exc) or type(exc).__name__


def _as_text(values: Sequence[Any]) -> list[Any]:
    return [None if v is None else str(v) for v in values]


def _as_time_text(values: Sequence[Any]) -> list[Any]:
    """MySQL TIME values (PyMySQL gives timedeltas, up to ±838 hours) as MySQL writes them.

    >>> _as_time_text([timedelta(hours=-1, seconds=1), timedelta(hours=30, microseconds=5)])
    ['-00:59:59', '30:00:00.000005']
    """
    texts: list[Any] = []
    for value in values:
        if not isinstance(value, timedelta):
            texts.append(None if value is None else str(value))
            continue
        sign = "-" if value < timedelta(0) else ""
        micros = abs(value) // timedelta(microseconds=1)
        seconds, micro = divmod(micros, 1_000_000)
        hours, rest = divmod(seconds, 3_600)
        text = f"{sign}{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
        texts.append(f"{text}.{micro:06d}" if micro else text)
    return texts


def _as_json_text(values: Sequence[Any]) -> list[Any]:
    return [None if v is None or isinstance(v, str) else json.dumps(v) for v in values]


_INTEGERS = {
    FIELD_TYPE.TINY,
    FIELD_TYPE.SHORT,
    FIELD_TYPE.LONG,
    FIELD_TYPE.INT24,
    FIELD_TYPE.LONGLONG,
    FIELD_TYPE.YEAR,
}
_STRINGS = {
    FIELD_TYPE.VARCHAR,
    FIELD_TYPE.VAR_STRING,
    FIELD_TYPE.STRING,
    FIELD_TYPE.TINY_BLOB,
    FIELD_TYPE.MEDIUM_BLOB,
    FIELD_TYPE.LONG_BLOB,
    FIELD_TYPE.BLOB,
    FIELD_TYPE.ENUM,
    FIELD_TYPE.SET,
}


def _column_type(
    column: Sequence[Any], charset: int | None
) -> tuple[pa.DataType, Converter | None]:
    code, precision, scale = column[1], column[4], column[5]
    if code in _INTEGERS:
        return pa.int64(), None
    if code == FIELD_TYPE.FLOAT:
        return pa.float32(), None
    if code == FIELD_TYPE.DOUBLE:
        return pa.float64(), None
    if code in (FIELD_TYPE.DECIMAL, FIELD_TYPE.NEWDECIMAL):
        # MySQL reports the display width (digits, sign and point): an upper bound.
        return pa.decimal128(min(precision or 38, 38), scale or 0), None
    if code in (FIELD_TYPE.DATE, FIELD_TYPE.NEWDATE):
        return pa.date32(), None
    if code in (FIELD_TYPE.DATETIME, FIELD_TYPE.TIMESTAMP):
        return pa.timestamp("us"), None
    if code == FIELD_TYPE.TIME:
        return pa.string(), _as_time_text
    if code == FIELD_TYPE.JSON:
        return pa.string(), _as_json_text
    if code in _STRINGS and charset == _BINARY_CHARSET:
        return pa.binary(), None
    if code == FIELD_TYPE.BIT:
        return pa.binary(), None
    return pa.string(), _as_text  # strings, and anything newer


def _schema_of(cursor: pymysql.cursors.SSCursor) -> tuple[pa.Schema, list[Converter | None]]:
    # The description does not tell binary strings from text; the result's fields do.
    fields_info = getattr(getattr(cursor, "_result", None), "fields", None) or []
    charsets = [getattr(f, "charsetnr", None) for f in fields_info]
    fields, converters = [], []
    for index, column in enumerate(cursor.description or ()):
        kind, convert = _column_type(column, charsets[index] if index < len(charsets) else None)
        fields.append(pa.field(column[0], kind))
        converters.append(convert)
    return pa.schema(fields), converters


def _abandon(cursor: pymysql.cursors.SSCursor, connection: Any) -> None:
    """Drop a half-read result at once: closing an unbuffered cursor would read every row
    left. The connection is closed (and the pool drops it); the result is marked finished
    so PyMySQL's finalizers do not try to read the rest from the closed socket."""
    result = getattr(cursor, "_result", None)
    if result is not None:
        result.unbuffered_active = False
    cursor._result = None
    with contextlib.suppress(pymysql.MySQLError):
        connection.close()


def run_mysql_extract(config: MysqlExtractConfig, context: NodeContext) -> object:
    url = context.reveal(config.connection, use="connection")
    parameters = bind_parameters(config.parameters, context.parameters)
    progress = Progress(context, "extracted")
    with _connection(url, config) as connection:
        cursor = connection.cursor()
        try:
            cursor.execute("START TRANSACTION READ ONLY")  # an extract never writes
            try:
                cursor.execute(config.query, parameters)
            except (KeyError, TypeError) as exc:
                # PyMySQL formats parameters itself: a placeholder without a value is a KeyError.
                raise NodeFailedError(f"query parameter missing or unusable: {exc}") from None
            if not cursor.description:
                raise NodeFailedError("the query returns no rows to extract (is it a SELECT?)")
            schema, converters = _schema_of(cursor)
            reference = write_query_result(
                context, schema, converters, lambda: cursor.fetchmany(config.batch_size), progress
            )
        except BaseException:
            _abandon(cursor, connection)
            raise
        cursor.close()
        connection.rollback()
    progress.done("from MySQL")
    return reference.to_output()


MYSQL_EXTRACT = NodeType(
    "mysql_extract",
    MysqlExtractConfig,
    run_mysql_extract,
    "Runs `query` on MySQL or MariaDB and outputs the rows as a table, in batches.",
)
