"""PostgreSQL node types: ``postgres_extract`` (a query into a table output) and
``postgres_load`` (a table output into a PostgreSQL table).

The extract declares the query as a server-side cursor in a read-only
transaction, which gives its columns. When every column has a type the ADBC
driver reads exactly (:mod:`backends.nodes.postgres_arrow`), the rows come
over binary COPY straight into Arrow batches; otherwise psycopg fetches them,
``batch_size`` rows at a time. Either way each batch of at most ``batch_size``
rows is written to the artifact store as it arrives: a worker holds a few
batches, never the whole result.

The load streams the table back with ``COPY … FROM STDIN`` in one
transaction, so a failed attempt leaves the target as it was: binary COPY from
Arrow when the node makes the table and the driver writes every column, CSV
otherwise.
"""

from __future__ import annotations

import io
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from psycopg import sql
from pydantic import Field

from backends.artifacts import ArtifactRef
from backends.model.errors import NodeCancelledError, NodeFailedError
from backends.nodes.base import NodeContext, NodeType
from backends.nodes.connections import (
    ConnectionConfig,
    ConnectionPool,
    DatabaseUrl,
    pool_for,
    refuse_unsafe_options,
)
from backends.nodes.postgres_arrow import (
    adbc_connection,
    adbc_failure,
    arrow_readable,
    arrow_writable,
    batch_stream,
    conform,
    first_raised,
    from_driver,
    refuse_nul_characters,
    slices,
)
from backends.nodes.tables import (
    Converter,
    Progress,
    QueryConfig,
    bind_parameters,
    interrupt_on_cancel,
    require_unique_names,
    write_query_result,
)

__all__ = ["POSTGRES_EXTRACT", "POSTGRES_LOAD", "PostgresExtractConfig", "PostgresLoadConfig"]

_SCHEMES = ("postgresql", "postgres")
#: About how much the driver reads before it hands over a batch. Its default, 16 MB, took
#: an extract's peak 20 MB higher than 4 MB did, for no time measurably saved.
BATCH_HINT_OPTION = "adbc.postgresql.batch_size_hint_bytes"
BATCH_HINT_BYTES = 4 * 2**20
_TABLE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$"


class _PostgresConnection(ConnectionConfig):
    SCHEMES = _SCHEMES


class PostgresExtractConfig(_PostgresConnection, QueryConfig):
    statement_timeout_seconds: float | None = Field(
        default=None, gt=0, le=86_400, description="Cancel the query after this long."
    )


class PostgresLoadConfig(_PostgresConnection):
    table: str = Field(pattern=_TABLE_PATTERN, description='Target table, "name" or "schema.name".')
    mode: Literal["create", "append", "replace"] = Field(
        default="append",
        description="create: a new table (fails if it exists); append: add rows (creating "
        "the table if missing); replace: drop and recreate it. Each in one transaction.",
    )
    input: str | None = Field(
        default=None,
        max_length=128,
        description="The upstream node whose table to load; needed when there are several.",
    )
    batch_size: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="Rows sent to COPY at a time: what a worker holds in memory.",
    )

    def side_effects(self) -> Literal["sandboxed"]:
        # A shadow run loads nothing: it reports what it would have written.
        return "sandboxed"

    def inputs_problem(self, upstream: Sequence[str]) -> str | None:
        if self.input is not None:
            if self.input not in upstream:
                listed = ", ".join(upstream) or "none"
                return f"input {self.input!r} is not one of this node's dependencies ({listed})"
            return None
        if not upstream:
            return "a load writes an upstream node's table, and this node has no dependencies"
        if len(upstream) != 1:
            return f"this node depends on {len(upstream)} nodes; name the one to load with `input`"
        return None


# -- connections -----------------------------------------------------------------------


def _alive(connection: psycopg.Connection[Any]) -> bool:
    if connection.closed:
        return False
    try:
        connection.execute("SELECT 1")
        connection.rollback()
    except psycopg.Error:
        return False
    return True


@contextmanager
def _connection(url: str, timeout: float) -> Iterator[psycopg.Connection[Any]]:
    parsed = DatabaseUrl.parse(url, schemes=_SCHEMES)
    described = parsed.describe()
    refuse_unsafe_options(parsed)

    # libpq knows postgresql:// and postgres://, not SQLAlchemy's postgresql+psycopg://.
    libpq_url = "postgresql://" + url.split("://", 1)[1]

    def connect() -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(
                libpq_url,
                connect_timeout=max(1, round(timeout)),
                # Only what the URL says: never the worker's own ~/.pgpass or PGPASSWORD.
                passfile=os.devnull,
                password=parsed.password or "",
            )
        except psycopg.Error as exc:
            raise NodeFailedError(
                f"cannot connect to PostgreSQL at {described}: {_first_line(exc)}"
            ) from None

    pool = pool_for(
        "postgresql",
        url,
        lambda: ConnectionPool(connect, close=lambda c: c.close(), alive=_alive),
        timeout,
    )
    with pool.connection() as connection:
        try:
            yield connection
            connection.rollback()  # hand it back idle, whatever the node left open
        except psycopg.Error as exc:
            raise _node_failure(exc, connection, described) from None


def _node_failure(
    exc: psycopg.Error, connection: psycopg.Connection[Any], described: str
) -> NodeFailedError:
    """A driver error as people read it: the connection lost, the query cancelled, or refused."""
    message = _first_line(exc)
    if connection.broken or connection.closed:
        return NodeFailedError(f"lost the connection to PostgreSQL at {described}: {message}")
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return NodeFailedError(f"PostgreSQL at {described} cancelled the query: {message}")
    return NodeFailedError(f"PostgreSQL at {described} refused it: {message}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- postgres_extract ------------------------------------------------------------------

# Type OIDs (pg_type) and the Arrow type each is read as. Anything else is read as text.
_ARROW_BY_OID: dict[int, pa.DataType] = {
    16: pa.bool_(),
    17: pa.binary(),
    20: pa.int64(),
    21: pa.int16(),
    23: pa.int32(),
    26: pa.int64(),
    700: pa.float32(),
    701: pa.float64(),
    1082: pa.date32(),
    1083: pa.time64("us"),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
    1186: pa.duration("us"),
}
_JSON_OIDS = {114, 3802}
_NUMERIC_OID = 1700


def _column_type(column: Any) -> tuple[pa.DataType, Converter | None]:
    oid = column.type_code
    if oid in _ARROW_BY_OID:
        return _ARROW_BY_OID[oid], None
    if oid == _NUMERIC_OID:
        precision, scale = column.precision, column.scale
        if precision is None:
            # numeric without a declared scale has no Arrow decimal that always fits.
            return pa.float64(), lambda values: [None if v is None else float(v) for v in values]
        if precision > 38:
            # Wider than Arrow's decimal128 (the widest DuckDB can hash): exact, as text.
            return pa.string(), lambda values: [None if v is None else str(v) for v in values]
        return pa.decimal128(precision, scale or 0), None
    if oid in _JSON_OIDS:
        return pa.string(), lambda values: [None if v is None else json.dumps(v) for v in values]
    return pa.string(), lambda values: [None if v is None else str(v) for v in values]


def _schema_of(description: Sequence[Any]) -> tuple[pa.Schema, list[Converter | None]]:
    fields, converters = [], []
    for column in description:
        kind, convert = _column_type(column)
        fields.append(pa.field(column.name, kind))
        converters.append(convert)
    return pa.schema(fields), converters


def _deadline_check(config: PostgresExtractConfig) -> Callable[[], None]:
    """Fails once the extract has run longer than ``statement_timeout_seconds``. With a
    server-side cursor PostgreSQL's statement_timeout limits each FETCH, not the query:
    the deadline over the whole extract is kept here."""
    timeout = config.statement_timeout_seconds
    deadline = None if timeout is None else time.monotonic() + timeout

    def check() -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise NodeFailedError(
                f"the query ran longer than statement_timeout_seconds ({timeout:g} s)"
            )

    return check


def _fetcher(
    cursor: psycopg.ServerCursor[Any], config: PostgresExtractConfig
) -> Callable[[], list[Any]]:
    """The next batch, each call, within the extract's deadline."""
    check = _deadline_check(config)

    def fetch() -> list[Any]:
        check()
        return cursor.fetchmany(config.batch_size)

    return fetch


def _statement_timeout(config: PostgresExtractConfig) -> sql.Composed | None:
    if config.statement_timeout_seconds is None:
        return None
    milliseconds = round(config.statement_timeout_seconds * 1000)
    return sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(milliseconds))


def run_postgres_extract(config: PostgresExtractConfig, context: NodeContext) -> object:
    url = context.reveal(config.connection, use="connection")
    parameters = bind_parameters(config.parameters, context.parameters)
    progress = Progress(context, "extracted")
    copy_query: str | None = None
    with (
        _connection(url, config.connect_timeout_seconds) as connection,
        connection.transaction(),
    ):
        connection.execute("SET TRANSACTION READ ONLY")  # an extract never writes
        if (timeout := _statement_timeout(config)) is not None:
            connection.execute(timeout)
        with (
            connection.cursor(name=f"figway_{uuid.uuid4().hex[:12]}") as cursor,
            interrupt_on_cancel(context, connection.cancel),
        ):
            cursor.itersize = config.batch_size
            # Declaring the cursor plans the query and describes its columns; no row
            # is computed until the first fetch.
            cursor.execute(config.query, parameters)
            if cursor.description is None:
                raise NodeFailedError("the query returns no rows to extract (is it a SELECT?)")
            schema, converters = _schema_of(cursor.description)
            if arrow_readable([column.type_code for column in cursor.description]):
                with psycopg.ClientCursor(connection) as literal:
                    # The parameters as literals, bound as psycopg binds them.
                    copy_query = literal.mogrify(config.query, parameters)
            else:
                reference = write_query_result(
                    context, schema, converters, _fetcher(cursor, config), progress
                )
    if copy_query is not None:
        reference = _extract_over_copy(url, config, context, copy_query, schema, progress)
    progress.done("from PostgreSQL")
    return reference.to_output()


def _extract_over_copy(
    url: str,
    config: PostgresExtractConfig,
    context: NodeContext,
    query: str,
    schema: pa.Schema,
    progress: Progress,
) -> ArtifactRef:
    """The query's rows over binary COPY into Arrow batches of ``schema``, written as they
    come, in a read-only transaction of the driver's own connection."""
    from adbc_driver_manager import dbapi

    require_unique_names(schema, "the query")
    described = DatabaseUrl.parse(url, schemes=_SCHEMES).describe()
    check_deadline = _deadline_check(config)
    try:
        with (
            adbc_connection(url, config.connect_timeout_seconds) as connection,
            connection.cursor() as cursor,
        ):
            cursor.execute("SET TRANSACTION READ ONLY")
            if (timeout := _statement_timeout(config)) is not None:
                cursor.execute(timeout.as_string(None))
            with interrupt_on_cancel(context, cursor.adbc_cancel):
                cursor.adbc_statement.set_options(**{BATCH_HINT_OPTION: str(BATCH_HINT_BYTES)})
                cursor.execute(_copyable(query))
                with context.table_store().new_table(schema) as table:
                    for batch in slices(cursor.fetch_record_batch(), config.batch_size):
                        check_deadline()
                        table.write(conform(batch, schema))
                        progress.add(batch.num_rows)
                        if context.cancelled():
                            raise NodeCancelledError("extract stopped: the run was cancelled")
                    reference = table.finish()
            connection.rollback()
    except (dbapi.Error, pa.ArrowException, OSError) as exc:
        # A failure mid-stream comes through Arrow's stream interface as an Arrow error
        # (OSError for the driver's I/O status); a disk's own OSError is not the server's.
        if not from_driver(exc):
            raise
        raise adbc_failure(exc, described) from None
    return reference


def _copyable(query: str) -> str:
    """The query as the driver wraps it, ``COPY (query) TO STDOUT``: without a final
    semicolon, and ending in a new line so a final ``-- comment`` ends before the bracket."""
    return query.rstrip().rstrip(";").rstrip() + "\n"


# -- postgres_load ---------------------------------------------------------------------


def _postgres_type(kind: pa.DataType) -> str:
    if pa.types.is_boolean(kind):
        return "boolean"
    if pa.types.is_int8(kind) or pa.types.is_int16(kind) or pa.types.is_uint8(kind):
        return "smallint"
    if pa.types.is_int32(kind) or pa.types.is_uint16(kind):
        return "integer"
    if pa.types.is_integer(kind):
        return "bigint" if not pa.types.is_uint64(kind) else "numeric(20,0)"
    if pa.types.is_float16(kind) or pa.types.is_float32(kind):
        return "real"
    if pa.types.is_floating(kind):
        return "double precision"
    if pa.types.is_decimal(kind):
        return f"numeric({kind.precision},{kind.scale})"
    if pa.types.is_date(kind):
        return "date"
    if pa.types.is_time(kind):
        return "time"
    if pa.types.is_timestamp(kind):
        return "timestamptz" if kind.tz else "timestamp"
    if pa.types.is_duration(kind):
        return "interval"
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return "bytea"
    if pa.types.is_nested(kind):
        return "jsonb"
    return "text"


def _csv_ready(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch with every column in a form PostgreSQL's CSV COPY reads back exactly."""
    arrays = []
    for field, column in zip(batch.schema, batch.columns, strict=True):
        kind = field.type
        if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            column = pa.array(
                [None if v is None else "\\x" + v.hex() for v in column.to_pylist()], pa.string()
            )
        elif pa.types.is_nested(kind):
            column = pa.array(
                [None if v is None else json.dumps(v, default=str) for v in column.to_pylist()],
                pa.string(),
            )
        elif pa.types.is_duration(kind):
            microseconds = pc.cast(column.cast(pa.duration("us")), pa.int64())
            column = pc.binary_join_element_wise(
                pc.cast(microseconds, pa.string()), " microseconds", ""
            )
        elif pa.types.is_string_view(kind):
            column = column.cast(pa.string())
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _csv_bytes(batch: pa.RecordBatch) -> bytes:
    buffer = io.BytesIO()
    # Strings are always quoted, so an empty string stays '' and an empty field is NULL.
    pa_csv.write_csv(_csv_ready(batch), buffer, pa_csv.WriteOptions(include_header=False))
    return buffer.getvalue()


def _single_input(config: PostgresLoadConfig, context: NodeContext) -> str:
    if config.input is not None:
        return config.input
    if len(context.upstream_outputs) != 1:
        raise NodeFailedError(
            "this node depends on several nodes; name the one to load with `input`"
        )
    return next(iter(context.upstream_outputs))


def _table_name(table: str) -> sql.Composable:
    return sql.Identifier(*table.split("."))


def run_postgres_load(config: PostgresLoadConfig, context: NodeContext) -> object:
    source_node = _single_input(config, context)
    source: ArtifactRef = context.upstream_table(source_node)
    # The output is the same whether or not rows were written, so a shadow run that
    # loads nothing still matches its primary run.
    output = {
        "table": config.table,
        "mode": config.mode,
        "rows": source.rows,
        "fingerprint": source.fingerprint,
    }
    if context.sandboxed:
        context.logger.info(
            "shadow run: wrote nothing to %s (%d rows would be loaded, mode %s)",
            config.table,
            source.rows,
            config.mode,
        )
        return output
    url = context.reveal(config.connection, use="connection")
    try:
        parquet = context.table_store().open_table(source)
    except FileNotFoundError:
        raise NodeFailedError(
            f"the table of upstream node {source_node!r} is gone from the "
            "artifact store (purged, or this worker reaches another store)"
        ) from None
    schema = parquet.schema_arrow
    progress = Progress(context, "loaded")
    with parquet:
        if arrow_writable(schema) and not _appends_to_a_table(url, config):
            _load_over_binary_copy(url, config, context, parquet, progress)
        else:
            _load_over_csv_copy(url, config, context, parquet, progress)
    progress.done(f"into {config.table}")
    return output


def _create_statements(config: PostgresLoadConfig, schema: pa.Schema) -> list[sql.Composed]:
    """What makes the target, as the mode says, before the rows are copied in."""
    table = _table_name(config.table)
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(_postgres_type(f.type)))
        for f in schema
    )
    statements: list[sql.Composed] = []
    if config.mode == "replace":
        statements.append(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
    create = "CREATE TABLE IF NOT EXISTS" if config.mode == "append" else "CREATE TABLE"
    statements.append(sql.SQL(create + " {} ({})").format(table, columns))
    return statements


def _table_exists_message(config: PostgresLoadConfig) -> str:
    return (
        f"table {config.table} already exists; mode create makes a new table "
        "(use append or replace)"
    )


def _appends_to_a_table(url: str, config: PostgresLoadConfig) -> bool:
    """Whether the load adds rows to a table that is already there. Binary COPY sends the
    columns by position in the types this node would create: only a table the load makes
    itself is sure to match; an existing one takes the CSV path, which names its columns
    and lets PostgreSQL convert the values."""
    if config.mode != "append":
        return False
    with _connection(url, config.connect_timeout_seconds) as connection:
        row = connection.execute("SELECT to_regclass(%s)", (_regclass_text(config.table),))
        found = row.fetchone()
    return found is not None and found[0] is not None


def _regclass_text(table: str) -> str:
    """``schema.name`` as to_regclass reads it: each part quoted, so its case is kept."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in table.split("."))


def _load_over_binary_copy(
    url: str,
    config: PostgresLoadConfig,
    context: NodeContext,
    parquet: Any,
    progress: Progress,
) -> None:
    """The table's batches into the target with the driver's bulk ingest (binary COPY),
    in one transaction with the statements that make the target."""
    from adbc_driver_manager import dbapi

    schema = parquet.schema_arrow
    described = DatabaseUrl.parse(url, schemes=_SCHEMES).describe()
    *schema_name, table_name = config.table.split(".")

    def on_batch(batch: pa.RecordBatch) -> None:
        refuse_nul_characters(batch)
        if context.cancelled():
            raise NodeCancelledError("load stopped: the run was cancelled (nothing written)")
        progress.add(batch.num_rows)

    reader, raised = batch_stream(
        schema, parquet.iter_batches(batch_size=config.batch_size), on_batch
    )
    try:
        with (
            adbc_connection(url, config.connect_timeout_seconds) as connection,
            connection.cursor() as cursor,
        ):
            for statement in _create_statements(config, schema):
                try:
                    cursor.execute(statement.as_string(None))
                except dbapi.Error as exc:
                    if getattr(exc, "sqlstate", None) == "42P07":  # duplicate_table
                        raise NodeFailedError(_table_exists_message(config)) from None
                    raise
            cursor.adbc_ingest(
                table_name,
                reader,
                mode="append",
                db_schema_name=schema_name[0] if schema_name else None,
            )
            connection.commit()
    except (dbapi.Error, pa.ArrowException, OSError) as exc:
        if not raised and not from_driver(exc):
            raise
        raise first_raised(raised, adbc_failure(exc, described)) from None


def _load_over_csv_copy(
    url: str,
    config: PostgresLoadConfig,
    context: NodeContext,
    parquet: Any,
    progress: Progress,
) -> None:
    schema = parquet.schema_arrow
    table = _table_name(config.table)
    with (
        _connection(url, config.connect_timeout_seconds) as connection,
        connection.transaction(),
    ):
        for statement in _create_statements(config, schema):
            try:
                connection.execute(statement)
            except psycopg.errors.DuplicateTable:
                raise NodeFailedError(_table_exists_message(config)) from None
        copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
            table, sql.SQL(", ").join(sql.Identifier(name) for name in schema.names)
        )
        with connection.cursor() as cursor, cursor.copy(copy) as stream:
            for batch in parquet.iter_batches(batch_size=config.batch_size):
                refuse_nul_characters(batch)
                stream.write(_csv_bytes(batch))
                progress.add(batch.num_rows)
                if context.cancelled():
                    raise NodeCancelledError(
                        "load stopped: the run was cancelled (nothing written)"
                    )


POSTGRES_EXTRACT = NodeType(
    "postgres_extract",
    PostgresExtractConfig,
    run_postgres_extract,
    "Runs `query` on PostgreSQL and outputs the rows as a table, in batches.",
)
POSTGRES_LOAD = NodeType(
    "postgres_load",
    PostgresLoadConfig,
    run_postgres_load,
    "Writes an upstream table into a PostgreSQL `table` (create, append or replace).",
)
