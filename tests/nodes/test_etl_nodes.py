"""The ETL node types against the real PostgreSQL and MariaDB, read back from their Parquet.

postgres_extract, mysql_extract, sql_transform and postgres_load are called as
the runtime calls them (config model, then ``run(config, context)``) with a
context writing to an artifact store in ``tmp_path``; what they wrote is read
back from the Parquet files and from the databases. The last tests run a node
through :class:`~backends.runtime.NodeRuntime` with a TCP proxy in front of
PostgreSQL, to break the connection in the middle of a query and then refuse
new ones.

Every table is named with a random suffix and dropped afterwards, and every
pooled connection is closed after each test.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pymysql
import pytest
from pydantic import ValidationError

from backends.artifacts import ArtifactRef, ArtifactStore
from backends.model.errors import SecretMissingError
from backends.model.status import NodeStatus
from backends.nodes import NodeCancelledError, NodeContext, NodeFailedError, default_registry
from backends.nodes.connections import close_all_pools
from backends.nodes.mysql import MysqlExtractConfig, run_mysql_extract
from backends.nodes.postgres import (
    PostgresExtractConfig,
    PostgresLoadConfig,
    run_postgres_extract,
    run_postgres_load,
)
from backends.nodes.transform import SqlTransformConfig, run_sql_transform
from backends.runtime.attempts import NodeRuntime, Outcome
from backends.store import Store
from tests.support.plans import start_run
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.service

UTC = dt.UTC


# -- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_pooled_connection_outlives_its_test() -> Iterator[None]:
    close_all_pools()
    yield
    close_all_pools()


class Postgres:
    """An autocommit connection to the session's database, and the tables a test made."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.database = urlsplit(url).path.lstrip("/")
        self.connection = psycopg.connect(url, autocommit=True)
        self._cleanup: list[str] = []

    def table(self, stem: str) -> str:
        name = f"{stem}_{uuid.uuid4().hex[:10]}"
        self._cleanup.append(f"DROP TABLE IF EXISTS {name}")
        return name

    def function(self, stem: str) -> str:
        name = f"{stem}_{uuid.uuid4().hex[:10]}"
        self._cleanup.append(f"DROP FUNCTION IF EXISTS {name}")
        return name

    def execute(self, query: str, parameters: Any = None) -> None:
        self.connection.execute(query, parameters)

    def rows(self, query: str, parameters: Any = None) -> list[tuple[Any, ...]]:
        return self.connection.execute(query, parameters).fetchall()

    def exists(self, table: str) -> bool:
        return bool(self.rows("SELECT to_regclass(%s) IS NOT NULL", (table,))[0][0])

    def columns(self, table: str) -> list[str]:
        return [
            name
            for (name,) in self.rows(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = %s ORDER BY ordinal_position",
                (table,),
            )
        ]

    def close(self) -> None:
        # Newest first: a function goes before the table it writes to.
        for statement in reversed(self._cleanup):
            self.connection.execute(statement)
        self.connection.close()


class Mysql:
    """An autocommit connection to MariaDB's ``test`` database, and the tables a test made."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connection = pymysql.connect(
            host="127.0.0.1", port=3306, user="root", database="test", autocommit=True
        )
        self._tables: list[str] = []

    def table(self, stem: str) -> str:
        name = f"{stem}_{uuid.uuid4().hex[:10]}"
        self._tables.append(name)
        return name

    def execute(self, query: str, parameters: Any = None) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute(query, parameters)

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        with self.connection.cursor() as cursor:
            cursor.execute(query)
            return list(cursor.fetchall())

    def close(self) -> None:
        for name in self._tables:
            self.execute(f"DROP TABLE IF EXISTS {name}")
        self.connection.close()


@pytest.fixture
def pg(pg_url: str) -> Iterator[Postgres]:
    database = Postgres(pg_url)
    yield database
    close_all_pools()  # no pooled connection may hold a lock on what is dropped
    database.close()


@pytest.fixture
def my(mysql_url: str) -> Iterator[Mysql]:
    database = Mysql(mysql_url)
    yield database
    close_all_pools()
    database.close()


@pytest.fixture
def artifacts(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


def make_context(
    artifacts: ArtifactStore,
    node_id: str,
    *,
    parameters: dict[str, Any] | None = None,
    upstream: dict[str, Any] | None = None,
    sandboxed: bool = False,
    job_run_id: str = "run-etl",
) -> NodeContext:
    return NodeContext(
        job_run_id=job_run_id,
        node_id=node_id,
        attempt=1,
        parameters=parameters or {},
        upstream_outputs=upstream or {},
        logger=logging.getLogger(f"figway.node.test.{node_id}"),
        sandboxed=sandboxed,
        artifacts=artifacts.for_attempt(
            job_run_id=job_run_id, node_id=node_id, attempt=1, sandboxed=sandboxed
        ),
    )


def run_extract(
    run: Callable[[Any, NodeContext], object],
    model: type[Any],
    artifacts: ArtifactStore,
    url: str,
    query: str,
    *,
    node_id: str = "extract",
    parameters: dict[str, Any] | None = None,
    run_parameters: dict[str, Any] | None = None,
    **config: Any,
) -> dict[str, Any]:
    """Validate an extract's config as a definition would, then run it once."""
    settings = model.model_validate(
        {"connection": url, "query": query, "parameters": parameters or {}, **config}
    )
    output = run(settings, make_context(artifacts, node_id, parameters=run_parameters))
    assert isinstance(output, dict)
    return output


pg_extract = functools.partial(run_extract, run_postgres_extract, PostgresExtractConfig)
my_extract = functools.partial(run_extract, run_mysql_extract, MysqlExtractConfig)


def transform(
    artifacts: ArtifactStore, query: str, upstream: dict[str, Any], *, node_id: str = "transform"
) -> dict[str, Any]:
    settings = SqlTransformConfig.model_validate({"query": query})
    output = run_sql_transform(settings, make_context(artifacts, node_id, upstream=upstream))
    assert isinstance(output, dict)
    return output


def pg_load(
    artifacts: ArtifactStore,
    url: str,
    source: dict[str, Any],
    table: str,
    mode: str,
    *,
    sandboxed: bool = False,
    **config: Any,
) -> object:
    settings = PostgresLoadConfig.model_validate(
        {"connection": url, "table": table, "mode": mode, **config}
    )
    context = make_context(artifacts, "load", upstream={"source": source}, sandboxed=sandboxed)
    return run_postgres_load(settings, context)


def table_output(artifacts: ArtifactStore, node_id: str, table: pa.Table) -> dict[str, Any]:
    """A table output written as a node would, for tables no database query gives."""
    writer = artifacts.for_attempt(
        job_run_id="run-etl", node_id=node_id, attempt=1, sandboxed=False
    )
    with writer.new_table(table.schema) as new:
        for batch in table.to_batches(max_chunksize=2):
            new.write(batch)
        return new.finish().to_output()


def reference(output: object) -> ArtifactRef:
    ref = ArtifactRef.from_output(output)
    assert ref is not None, f"not a table output: {output!r}"
    return ref


def read(artifacts: ArtifactStore, output: object) -> pa.Table:
    path = artifacts.local_path(reference(output))
    assert path is not None
    return pq.read_table(path)


def parquet_row_groups(artifacts: ArtifactStore, output: object) -> int:
    path = artifacts.local_path(reference(output))
    assert path is not None
    return int(pq.ParquetFile(path).metadata.num_row_groups)


def by_id(table: pa.Table) -> list[dict[str, Any]]:
    return sorted(table.to_pylist(), key=lambda row: row["id"])


# -- postgres_extract ---------------------------------------------------------------------

PG_ALL_TYPES = """
CREATE TABLE {table} (
    id int4,
    small int2,
    medium int4,
    big int8,
    price numeric(10, 2),
    ratio numeric,
    label text,
    code varchar(20),
    flag bool,
    day date,
    at timestamp,
    at_tz timestamptz,
    doc jsonb,
    raw bytea,
    ref uuid
)
"""
PG_ALL_ROWS = """
INSERT INTO {table} VALUES
(1, -32768, 2147483647, 9223372036854775807, 12345678.91, 0.125, 'plain', 'A-1', true,
 '2024-02-29', '2024-02-29 13:45:01.123456', '2024-02-29 13:45:01.5+02',
 '{{"a": 1, "b": [true, null], "c": "\u00e9t\u00e9"}}', '\\x00ff10',
 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'),
(2, 0, 0, 0, -0.01, -2.5, '', '', false,
 '1970-01-01', '1970-01-01 00:00:00', '1970-01-01 00:00:00+00',
 '[]', '\\x', '00000000-0000-0000-0000-000000000000'),
(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
(4, 7, 7, 7, 0.5, 1e-3, E'quote " comma , newline \\n backslash \\\\ tab \\t end', 'x', true,
 '9999-12-31', '2000-01-01 00:00:00.000001', '2000-01-01 00:00:00.000001+00',
 '"just a string"', '\\x5c2e0a', 'ffffffff-ffff-ffff-ffff-ffffffffffff')
"""

PG_ALL_SCHEMA = {
    "id": pa.int32(),
    "small": pa.int16(),
    "medium": pa.int32(),
    "big": pa.int64(),
    "price": pa.decimal128(10, 2),
    "ratio": pa.float64(),
    "label": pa.string(),
    "code": pa.string(),
    "flag": pa.bool_(),
    "day": pa.date32(),
    "at": pa.timestamp("us"),
    "at_tz": pa.timestamp("us", tz="UTC"),
    "doc": pa.string(),
    "raw": pa.binary(),
    "ref": pa.string(),
}


@pytest.fixture
def pg_all_types(pg: Postgres) -> str:
    """A table with every type the extract maps, an empty-string row and an all-NULL row."""
    table = pg.table("etl_types")
    pg.execute(PG_ALL_TYPES.format(table=table))
    pg.execute(PG_ALL_ROWS.format(table=table))
    return table


def test_postgres_extract_reads_every_type_into_its_arrow_type(
    pg: Postgres, pg_all_types: str, artifacts: ArtifactStore
) -> None:
    output = pg_extract(artifacts, pg.url, f"SELECT * FROM {pg_all_types}")
    table = read(artifacts, output)

    assert {field.name: field.type for field in table.schema} == PG_ALL_SCHEMA
    assert reference(output).rows == 4
    assert reference(output).columns == tuple(
        (name, str(kind)) for name, kind in PG_ALL_SCHEMA.items()
    )
    first, second, nulls, tricky = by_id(table)
    assert first == {
        "id": 1,
        "small": -32768,
        "medium": 2147483647,
        "big": 9223372036854775807,
        "price": Decimal("12345678.91"),
        "ratio": 0.125,
        "label": "plain",
        "code": "A-1",
        "flag": True,
        "day": dt.date(2024, 2, 29),
        "at": dt.datetime(2024, 2, 29, 13, 45, 1, 123456),
        "at_tz": dt.datetime(2024, 2, 29, 11, 45, 1, 500000, tzinfo=UTC),
        "doc": first["doc"],
        "raw": b"\x00\xff\x10",
        "ref": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    }
    assert json.loads(first["doc"]) == {"a": 1, "b": [True, None], "c": "été"}
    assert second["label"] == second["code"] == ""
    assert second["raw"] == b""
    assert second["price"] == Decimal("-0.01")
    assert second["ratio"] == -2.5
    assert json.loads(second["doc"]) == []
    assert nulls == {"id": 3, **{name: None for name in PG_ALL_SCHEMA if name != "id"}}
    assert tricky["label"] == 'quote " comma , newline \n backslash \\ tab \t end'
    assert tricky["at_tz"] == dt.datetime(2000, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
    assert tricky["day"] == dt.date(9999, 12, 31)
    assert json.loads(tricky["doc"]) == "just a string"
    assert tricky["raw"] == b"\\.\n"


def test_postgres_extract_binds_parameters_and_run_parameters(
    pg: Postgres, artifacts: ArtifactStore
) -> None:
    table = pg.table("etl_people")
    pg.execute(f"CREATE TABLE {table} (id int4, name text)")
    pg.execute(f"INSERT INTO {table} VALUES (1, 'ada'), (2, 'bob'), (3, 'bob'), (4, 'cy')")

    output = pg_extract(
        artifacts,
        pg.url,
        f"SELECT id, name FROM {table} WHERE id >= %(low)s AND name = %(who)s",
        parameters={"low": 3, "who": "param:person"},
        run_parameters={"person": "bob"},
    )
    assert by_id(read(artifacts, output)) == [{"id": 3, "name": "bob"}]

    # Without parameters a literal % is left alone (no placeholder is expected).
    literal = pg_extract(artifacts, pg.url, f"SELECT id FROM {table} WHERE name LIKE 'b%'")
    assert sorted(read(artifacts, literal).column("id").to_pylist()) == [2, 3]


def test_postgres_extract_fails_naming_a_missing_run_parameter(
    pg: Postgres, artifacts: ArtifactStore
) -> None:
    with pytest.raises(NodeFailedError, match=r"'who'.*run parameter 'person'.*it has: day"):
        pg_extract(
            artifacts,
            pg.url,
            "SELECT %(who)s AS who",
            parameters={"who": "param:person"},
            run_parameters={"day": "2026-01-01"},
        )


def test_postgres_extract_in_small_batches_matches_one_batch(
    pg: Postgres, artifacts: ArtifactStore
) -> None:
    table = pg.table("etl_seven")
    pg.execute(f"CREATE TABLE {table} (id int4, name text, score numeric(6, 2))")
    pg.execute(f"INSERT INTO {table} SELECT g, 'name ' || g, g * 1.25 FROM generate_series(1, 7) g")
    query = f"SELECT * FROM {table}"

    batched = pg_extract(artifacts, pg.url, query, batch_size=3, node_id="batched")
    whole = pg_extract(artifacts, pg.url, query, batch_size=100, node_id="whole")

    assert parquet_row_groups(artifacts, batched) == 3  # 3 + 3 + 1: it did write in batches
    assert parquet_row_groups(artifacts, whole) == 1
    assert reference(batched).rows == reference(whole).rows == 7
    assert reference(batched).fingerprint == reference(whole).fingerprint
    assert by_id(read(artifacts, batched)) == by_id(read(artifacts, whole))


def test_postgres_extract_of_no_rows_is_an_empty_table_with_the_columns(
    pg: Postgres, pg_all_types: str, artifacts: ArtifactStore
) -> None:
    output = pg_extract(artifacts, pg.url, f"SELECT * FROM {pg_all_types} WHERE false")
    table = read(artifacts, output)
    assert table.num_rows == 0
    assert reference(output).rows == 0
    assert {field.name: field.type for field in table.schema} == PG_ALL_SCHEMA


def test_postgres_extract_syntax_error_names_postgresql(
    pg: Postgres, artifacts: ArtifactStore
) -> None:
    with pytest.raises(
        NodeFailedError, match=r"PostgreSQL at postgresql://.* refused it: syntax error"
    ):
        pg_extract(artifacts, pg.url, "SELEC 1")


@pytest.mark.parametrize(
    "query",
    [
        "INSERT INTO {table} VALUES (1) RETURNING id",
        "SELECT {function}() AS id",
        "SELECT set_config('transaction_read_only', 'off', true), {function}() AS id",
    ],
    ids=["insert", "function-that-inserts", "read-write-switch"],
)
def test_postgres_extract_cannot_write(pg: Postgres, artifacts: ArtifactStore, query: str) -> None:
    table = pg.table("etl_written")
    function = pg.function("etl_write")
    pg.execute(f"CREATE TABLE {table} (id int4)")
    pg.execute(
        f"CREATE FUNCTION {function}() RETURNS int4 LANGUAGE sql "
        f"AS 'INSERT INTO {table} VALUES (1) RETURNING id'"
    )
    with pytest.raises(NodeFailedError, match="PostgreSQL"):
        pg_extract(artifacts, pg.url, query.format(table=table, function=function))
    assert pg.rows(f"SELECT count(*) FROM {table}") == [(0,)]


def test_postgres_extract_refuses_a_write_as_a_read_only_transaction(
    pg: Postgres, artifacts: ArtifactStore
) -> None:
    table = pg.table("etl_written")
    function = pg.function("etl_write")
    pg.execute(f"CREATE TABLE {table} (id int4)")
    pg.execute(
        f"CREATE FUNCTION {function}() RETURNS int4 LANGUAGE sql "
        f"AS 'INSERT INTO {table} VALUES (1) RETURNING id'"
    )
    with pytest.raises(NodeFailedError, match="cannot execute INSERT in a read-only transaction"):
        pg_extract(artifacts, pg.url, f"SELECT {function}() AS id")


def test_postgres_extract_statement_timeout_cancels_the_query(
    pg: Postgres, artifacts: ArtifactStore
) -> None:
    started = time.monotonic()
    with pytest.raises(NodeFailedError, match="statement timeout") as failure:
        pg_extract(artifacts, pg.url, "SELECT pg_sleep(10) AS slept", statement_timeout_seconds=0.3)
    assert time.monotonic() - started < 5
    assert "PostgreSQL" in str(failure.value)
    # The pooled connection that saw the error was dropped; the next extract is fine.
    assert read(artifacts, pg_extract(artifacts, pg.url, "SELECT 1 AS one")).num_rows == 1


def test_postgres_extract_statement_timeout_is_not_reported_as_a_lost_connection(
    pg: Postgres, artifacts: ArtifactStore
) -> None:
    with pytest.raises(NodeFailedError) as failure:
        pg_extract(artifacts, pg.url, "SELECT pg_sleep(10) AS slept", statement_timeout_seconds=0.3)
    # The server cancelled the query as asked; the connection was never lost.
    assert "lost the connection" not in str(failure.value)


def test_postgres_extract_through_a_secret(
    pg: Postgres, artifacts: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIGWAY_SECRET_PG_ETL", pg.url)
    output = pg_extract(artifacts, "secret:pg-etl", "SELECT current_database() AS db")
    assert read(artifacts, output).to_pylist() == [{"db": pg.database}]


def test_postgres_extract_with_an_unset_secret_names_its_variable(
    artifacts: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FIGWAY_SECRET_PG_ABSENT", raising=False)
    with pytest.raises(SecretMissingError, match="FIGWAY_SECRET_PG_ABSENT"):
        pg_extract(artifacts, "secret:pg-absent", "SELECT 1 AS one")


def assert_duplicate_names_handled(
    run: Callable[[], dict[str, Any]], artifacts: ArtifactStore, name: str
) -> None:
    """Two result columns with one name: a NodeFailedError naming it, or distinct names.

    Either is fine. A table with two columns of one name is not: no downstream
    sql_transform can read it, and postgres_load cannot create it.
    """
    failure: NodeFailedError | None = None
    try:
        output = run()
    except NodeFailedError as exc:
        failure = exc
    if failure is not None:
        assert name in str(failure)
        return
    path = artifacts.local_path(reference(output))
    assert path is not None
    names = pq.ParquetFile(path).schema_arrow.names
    assert len(set(names)) == len(names) == 2, f"a table with columns {names}"


def test_postgres_extract_of_two_columns_with_one_name(
    pg: Postgres, artifacts: ArtifactStore
) -> None:
    # As common as `SELECT a.id, b.id FROM a JOIN b ...`; here without tables.
    assert_duplicate_names_handled(
        lambda: pg_extract(artifacts, pg.url, "SELECT 1 AS id, 2 AS id"), artifacts, "id"
    )


# -- mysql_extract ------------------------------------------------------------------------

MY_ALL_TYPES = """
CREATE TABLE {table} (
    id INT,
    n INT,
    big BIGINT,
    amount DECIMAL(10, 2),
    name VARCHAR(40),
    body TEXT,
    data BLOB,
    tag VARBINARY(16),
    day DATE,
    at DATETIME,
    doc JSON
) CHARACTER SET utf8mb4
"""
MY_ALL_ROWS = """
INSERT INTO {table} VALUES
(1, -2147483648, 9223372036854775807, 12345678.91, 'caf\u00e9', 'long text', x'00ff10', x'0102',
 '2024-02-29', '2024-02-29 13:45:01', '{{"a": 1, "b": [true, null]}}'),
(2, 0, 0, -0.01, '', '', x'', x'', '1970-01-01', '1970-01-01 00:00:00', '[]'),
(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
"""


@pytest.fixture
def my_all_types(my: Mysql) -> str:
    table = my.table("etl_types")
    my.execute(MY_ALL_TYPES.format(table=table))
    my.execute(MY_ALL_ROWS.format(table=table))
    return table


def test_mysql_extract_reads_every_type_into_its_arrow_type(
    my: Mysql, my_all_types: str, artifacts: ArtifactStore
) -> None:
    output = my_extract(artifacts, my.url, f"SELECT * FROM {my_all_types}")
    table = read(artifacts, output)
    types = {field.name: field.type for field in table.schema}

    amount = types.pop("amount")
    assert pa.types.is_decimal(amount)
    assert (amount.scale, amount.precision >= 10) == (2, True)
    assert types == {
        "id": pa.int64(),
        "n": pa.int64(),
        "big": pa.int64(),
        "name": pa.string(),
        "body": pa.string(),
        "data": pa.binary(),
        "tag": pa.binary(),
        "day": pa.date32(),
        "at": pa.timestamp("us"),
        "doc": pa.string(),
    }
    first, second, nulls = by_id(table)
    assert {key: value for key, value in first.items() if key != "doc"} == {
        "id": 1,
        "n": -2147483648,
        "big": 9223372036854775807,
        "amount": Decimal("12345678.91"),
        "name": "café",
        "body": "long text",
        "data": b"\x00\xff\x10",
        "tag": b"\x01\x02",
        "day": dt.date(2024, 2, 29),
        "at": dt.datetime(2024, 2, 29, 13, 45, 1),
    }
    assert json.loads(first["doc"]) == {"a": 1, "b": [True, None]}
    assert (second["name"], second["body"], second["data"], second["tag"]) == ("", "", b"", b"")
    assert second["amount"] == Decimal("-0.01")
    assert json.loads(second["doc"]) == []
    assert nulls == {"id": 3, **{name: None for name in first if name != "id"}}


def test_mysql_extract_binds_parameters_and_run_parameters(
    my: Mysql, artifacts: ArtifactStore
) -> None:
    table = my.table("etl_people")
    my.execute(f"CREATE TABLE {table} (id INT, name VARCHAR(20))")
    my.execute(f"INSERT INTO {table} VALUES (1, 'ada'), (2, 'bob'), (3, 'bob'), (4, 'cy')")

    output = my_extract(
        artifacts,
        my.url,
        f"SELECT id, name FROM {table} WHERE id >= %(low)s AND name = %(who)s",
        parameters={"low": 3, "who": "param:person"},
        run_parameters={"person": "bob"},
    )
    assert by_id(read(artifacts, output)) == [{"id": 3, "name": "bob"}]

    literal = my_extract(artifacts, my.url, f"SELECT id FROM {table} WHERE name LIKE 'b%'")
    assert sorted(read(artifacts, literal).column("id").to_pylist()) == [2, 3]

    with pytest.raises(NodeFailedError, match=r"run parameter 'person'"):
        my_extract(artifacts, my.url, "SELECT %(who)s AS who", parameters={"who": "param:person"})


def test_mysql_extract_in_small_batches_matches_one_batch(
    my: Mysql, artifacts: ArtifactStore
) -> None:
    table = my.table("etl_seven")
    my.execute(f"CREATE TABLE {table} (id INT, name VARCHAR(20), score DECIMAL(6, 2))")
    my.execute(
        f"INSERT INTO {table} VALUES "
        + ", ".join(f"({i}, 'name {i}', {i * 1.25})" for i in range(1, 8))
    )
    query = f"SELECT * FROM {table}"

    batched = my_extract(artifacts, my.url, query, batch_size=3, node_id="batched")
    whole = my_extract(artifacts, my.url, query, batch_size=100, node_id="whole")

    assert parquet_row_groups(artifacts, batched) == 3
    assert reference(batched).rows == reference(whole).rows == 7
    assert reference(batched).fingerprint == reference(whole).fingerprint
    assert by_id(read(artifacts, batched))[6] == {
        "id": 7,
        "name": "name 7",
        "score": Decimal("8.75"),
    }


def test_mysql_extract_of_no_rows_is_an_empty_table_with_the_columns(
    my: Mysql, my_all_types: str, artifacts: ArtifactStore
) -> None:
    output = my_extract(artifacts, my.url, f"SELECT id, name, data FROM {my_all_types} WHERE 1 = 0")
    table = read(artifacts, output)
    assert table.num_rows == 0
    assert table.schema.names == ["id", "name", "data"]
    assert table.schema.field("data").type == pa.binary()


def test_mysql_extract_syntax_error_names_mysql(my: Mysql, artifacts: ArtifactStore) -> None:
    with pytest.raises(NodeFailedError, match=r"MySQL at mysql://root@127\.0\.0\.1:3306/test"):
        my_extract(artifacts, my.url, "SELEC 1")
    # The connection that failed was closed, not pooled: the next extract works.
    assert read(artifacts, my_extract(artifacts, my.url, "SELECT 1 AS one")).num_rows == 1


def test_mysql_extract_cannot_write(my: Mysql, artifacts: ArtifactStore) -> None:
    table = my.table("etl_written")
    my.execute(f"CREATE TABLE {table} (id INT)")
    with pytest.raises(NodeFailedError, match="READ ONLY transaction"):
        my_extract(artifacts, my.url, f"INSERT INTO {table} VALUES (1)")
    assert my.rows(f"SELECT count(*) FROM {table}") == [(0,)]


def test_mysql_extract_write_refusal_is_not_reported_as_a_lost_connection(
    my: Mysql, artifacts: ArtifactStore
) -> None:
    table = my.table("etl_written")
    my.execute(f"CREATE TABLE {table} (id INT)")
    with pytest.raises(NodeFailedError) as failure:
        my_extract(artifacts, my.url, f"INSERT INTO {table} VALUES (1)")
    # The server refused a statement; the connection was fine.
    assert "lost the connection" not in str(failure.value)


def test_mysql_extract_fails_naming_a_placeholder_without_a_parameter(
    my: Mysql, artifacts: ArtifactStore
) -> None:
    with pytest.raises(NodeFailedError, match="missing"):
        my_extract(artifacts, my.url, "SELECT %(low)s AS low", parameters={"high": 1})


def test_mysql_extract_of_two_columns_with_one_name(my: Mysql, artifacts: ArtifactStore) -> None:
    assert_duplicate_names_handled(
        lambda: my_extract(artifacts, my.url, "SELECT 1 AS id, 2 AS id"), artifacts, "id"
    )


# -- sql_transform ------------------------------------------------------------------------


@pytest.fixture
def customers_and_orders(
    pg: Postgres, my: Mysql, artifacts: ArtifactStore
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Customers extracted from PostgreSQL, their orders from MariaDB."""
    customers = pg.table("etl_customers")
    pg.execute(f"CREATE TABLE {customers} (id int4, region text)")
    pg.execute(
        f"INSERT INTO {customers} VALUES (1, 'north'), (2, 'south'), (3, 'north'), (4, 'east')"
    )
    orders = my.table("etl_orders")
    my.execute(f"CREATE TABLE {orders} (id INT, customer_id INT, amount DECIMAL(10, 2))")
    my.execute(
        f"INSERT INTO {orders} VALUES (10, 1, 5.25), (11, 1, 4.75), (12, 2, 100.10), "
        "(13, 3, 0.01), (14, 99, 7.00)"
    )
    return (
        pg_extract(artifacts, pg.url, f"SELECT * FROM {customers}", node_id="customers"),
        my_extract(artifacts, my.url, f"SELECT * FROM {orders}", node_id="orders"),
    )


def test_sql_transform_joins_a_postgres_and_a_mysql_extract(
    customers_and_orders: tuple[dict[str, Any], dict[str, Any]], artifacts: ArtifactStore
) -> None:
    customers, orders = customers_and_orders
    output = transform(
        artifacts,
        "SELECT c.region, count(*) AS orders, sum(o.amount) AS total "
        "FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY c.region;",
        {"customers": customers, "orders": orders},
    )
    rows = sorted(read(artifacts, output).to_pylist(), key=lambda row: row["region"])
    assert rows == [
        {"region": "north", "orders": 3, "total": Decimal("10.01")},
        {"region": "south", "orders": 1, "total": Decimal("100.10")},
    ]
    assert reference(output).rows == 2


def test_sql_transform_sees_a_node_id_that_needs_quotes(
    customers_and_orders: tuple[dict[str, Any], dict[str, Any]], artifacts: ArtifactStore
) -> None:
    customers, _ = customers_and_orders
    output = transform(
        artifacts,
        'SELECT count(*) AS n, max(id) AS top FROM "extract-pg"',
        {"extract-pg": customers},
    )
    assert read(artifacts, output).to_pylist() == [{"n": 4, "top": 4}]


def test_sql_transform_reads_a_json_list_of_objects_as_a_table(
    customers_and_orders: tuple[dict[str, Any], dict[str, Any]], artifacts: ArtifactStore
) -> None:
    customers, _ = customers_and_orders
    api = [{"id": 1, "vip": True}, {"id": 4, "vip": True}, {"id": 2, "vip": False}]
    output = transform(
        artifacts,
        "SELECT c.id, c.region FROM customers c JOIN api a ON a.id = c.id WHERE a.vip",
        {"customers": customers, "api": api, "status": {"ok": True}},
    )
    assert by_id(read(artifacts, output)) == [
        {"id": 1, "region": "north"},
        {"id": 4, "region": "east"},
    ]


def test_sql_transform_keeps_keys_missing_from_the_first_json_object(
    artifacts: ArtifactStore,
) -> None:
    api = [{"id": 1}, {"id": 2, "note": "only here"}]
    output = transform(artifacts, "SELECT * FROM api", {"api": api})
    assert by_id(read(artifacts, output)) == [
        {"id": 1, "note": None},
        {"id": 2, "note": "only here"},
    ]


def test_sql_transform_json_that_is_no_table_fails_naming_the_node(
    artifacts: ArtifactStore,
) -> None:
    api = [{"value": 1}, {"value": "one"}]
    with pytest.raises(NodeFailedError, match="api"):
        transform(artifacts, "SELECT * FROM api", {"api": api})


def test_sql_transform_of_two_columns_with_one_name(artifacts: ArtifactStore) -> None:
    assert_duplicate_names_handled(
        lambda: transform(artifacts, "SELECT 1 AS id, 2 AS id", {}), artifacts, "id"
    )


@pytest.mark.parametrize("reader", ["read_csv", "read_text"])
def test_sql_transform_cannot_read_files(
    artifacts: ArtifactStore, tmp_path: Path, reader: str
) -> None:
    private = tmp_path / "private.csv"
    private.write_text("secret\nhunter2\n")
    with pytest.raises(NodeFailedError, match="DuckDB refused the query") as failure:
        transform(artifacts, f"SELECT * FROM {reader}('{private}')", {"x": [{"a": 1}]})
    assert "disabled by configuration" in str(failure.value)
    assert "hunter2" not in str(failure.value)


def test_sql_transform_cannot_read_the_workers_files(artifacts: ArtifactStore) -> None:
    assert Path("/etc/hostname").exists()  # so only the lock can make the query fail
    with pytest.raises(NodeFailedError, match="DuckDB refused the query: Permission Error"):
        transform(artifacts, "SELECT * FROM read_csv('/etc/hostname')", {})


@pytest.mark.parametrize(
    "query",
    ["SET enable_external_access = true", "CREATE TABLE t AS SELECT 1", "SELECT 1; SELECT 2"],
)
def test_sql_transform_takes_one_select_and_nothing_else(query: str) -> None:
    with pytest.raises(ValidationError, match="one SELECT only"):
        SqlTransformConfig.model_validate({"query": query})


def test_sql_transform_cannot_switch_file_access_back_on(artifacts: ArtifactStore) -> None:
    # A SELECT cannot SET; the closest it gets is reading the setting, which stays off.
    output = transform(artifacts, "SELECT current_setting('enable_external_access') AS access", {})
    table = artifacts.open_table(ArtifactRef.from_output(output))  # type: ignore[arg-type]
    with table:
        assert table.read().column("access").to_pylist() == [False]


def test_sql_transform_syntax_error_names_duckdb_and_the_tables(artifacts: ArtifactStore) -> None:
    with pytest.raises(NodeFailedError, match=r"DuckDB refused the query: Parser Error.*tables: x"):
        transform(artifacts, "SELEC * FROM x", {"x": [{"a": 1}]})


def test_sql_transform_select_star_keeps_the_fingerprint(
    pg: Postgres, artifacts: ArtifactStore
) -> None:
    table = pg.table("etl_plain")
    pg.execute(f"CREATE TABLE {table} (id int4, name text, score numeric(6, 2), day date)")
    pg.execute(
        f"INSERT INTO {table} VALUES (1, 'a', 1.50, '2024-01-01'), (2, '', NULL, NULL), "
        "(3, NULL, -2.25, '1999-12-31'), (3, NULL, -2.25, '1999-12-31')"
    )
    source = pg_extract(artifacts, pg.url, f"SELECT * FROM {table}", node_id="x")
    copied = transform(artifacts, "SELECT * FROM x ORDER BY id DESC", {"x": source})
    assert reference(copied).fingerprint == reference(source).fingerprint
    assert reference(copied).columns == reference(source).columns
    # Not a constant: another table does not match.
    fewer = transform(artifacts, "SELECT * FROM x WHERE id < 3", {"x": source}, node_id="fewer")
    assert reference(fewer).fingerprint != reference(source).fingerprint


def test_sql_transform_select_star_keeps_the_fingerprint_of_every_type(
    pg: Postgres, pg_all_types: str, artifacts: ArtifactStore
) -> None:
    source = pg_extract(artifacts, pg.url, f"SELECT * FROM {pg_all_types}", node_id="x")
    copied = transform(artifacts, "SELECT * FROM x", {"x": source})
    assert reference(copied).columns == reference(source).columns
    assert reference(copied).fingerprint == reference(source).fingerprint


@pytest.fixture
def worker_time_zone() -> Iterator[Callable[[str], None]]:
    """Sets the process's local time zone (as a worker's TZ would) and restores it."""
    before = os.environ.get("TZ")

    def set_zone(zone: str) -> None:
        os.environ["TZ"] = zone
        time.tzset()

    yield set_zone
    if before is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = before
    time.tzset()


def test_sql_transform_fingerprint_does_not_depend_on_the_worker_time_zone(
    pg: Postgres, artifacts: ArtifactStore, worker_time_zone: Callable[[str], None]
) -> None:
    source = pg_extract(
        artifacts,
        pg.url,
        "SELECT 1 AS id, timestamptz '2024-02-29 13:45:01+00' AS at_tz",
        node_id="x",
    )
    fingerprints = {}
    for zone in ("Europe/Paris", "America/New_York"):
        worker_time_zone(zone)
        copied = transform(artifacts, "SELECT * FROM x", {"x": source}, node_id=zone.split("/")[1])
        fingerprints[zone] = (reference(copied).columns, reference(copied).fingerprint)
    # Two workers (an RQ one and a Prefect one, say) in different zones must agree.
    assert fingerprints["Europe/Paris"] == fingerprints["America/New_York"]


# -- postgres_load ------------------------------------------------------------------------


@pytest.fixture
def three_rows(pg: Postgres, artifacts: ArtifactStore) -> dict[str, Any]:
    return pg_extract(
        artifacts,
        pg.url,
        "SELECT * FROM (VALUES (1, 'one'), (2, 'two'), (3, NULL)) AS v(id, name)",
        node_id="source",
    )


def test_postgres_load_create_makes_the_table_and_refuses_an_existing_one(
    pg: Postgres, artifacts: ArtifactStore, three_rows: dict[str, Any]
) -> None:
    table = pg.table("etl_created")
    output = pg_load(artifacts, pg.url, three_rows, table, "create")
    assert output == {
        "table": table,
        "mode": "create",
        "rows": 3,
        "fingerprint": reference(three_rows).fingerprint,
    }
    assert pg.rows(f"SELECT id, name FROM {table} ORDER BY id") == [
        (1, "one"),
        (2, "two"),
        (3, None),
    ]

    with pytest.raises(NodeFailedError, match=f"table {table} already exists"):
        pg_load(artifacts, pg.url, three_rows, table, "create")
    assert pg.rows(f"SELECT count(*) FROM {table}") == [(3,)]


def test_postgres_load_append_creates_then_adds(
    pg: Postgres, artifacts: ArtifactStore, three_rows: dict[str, Any]
) -> None:
    table = pg.table("etl_appended")
    pg_load(artifacts, pg.url, three_rows, table, "append")
    assert pg.rows(f"SELECT count(*) FROM {table}") == [(3,)]
    pg_load(artifacts, pg.url, three_rows, table, "append")
    assert pg.rows(f"SELECT id, count(*) FROM {table} GROUP BY id ORDER BY id") == [
        (1, 2),
        (2, 2),
        (3, 2),
    ]


def test_postgres_load_replace_drops_the_old_columns_and_rows(
    pg: Postgres, artifacts: ArtifactStore, three_rows: dict[str, Any]
) -> None:
    table = pg.table("etl_replaced")
    pg.execute(f"CREATE TABLE {table} (old_column text, id int8)")
    pg.execute(f"INSERT INTO {table} SELECT 'old', g FROM generate_series(1, 5) g")

    pg_load(artifacts, pg.url, three_rows, table, "replace")
    assert pg.columns(table) == ["id", "name"]
    assert pg.rows(f"SELECT id, name FROM {table} ORDER BY id") == [
        (1, "one"),
        (2, "two"),
        (3, None),
    ]


def test_postgres_load_round_trip_is_exact(
    pg: Postgres, pg_all_types: str, artifacts: ArtifactStore
) -> None:
    source = pg_extract(artifacts, pg.url, f"SELECT * FROM {pg_all_types}", node_id="source")
    loaded = pg.table("etl_loaded")
    pg_load(artifacts, pg.url, source, loaded, "create", batch_size=2)

    again = pg_extract(artifacts, pg.url, f"SELECT * FROM {loaded}", node_id="again")
    assert reference(again).columns == reference(source).columns
    assert by_id(read(artifacts, again)) == by_id(read(artifacts, source))
    assert reference(again).fingerprint == reference(source).fingerprint
    # '' and NULL stay apart, in text and in bytea.
    assert pg.rows(
        f"SELECT count(*) FILTER (WHERE label = ''), count(*) FILTER (WHERE label IS NULL), "
        f"count(*) FILTER (WHERE raw = ''::bytea), count(*) FILTER (WHERE raw IS NULL) "
        f"FROM {loaded}"
    ) == [(1, 1, 1, 1)]


def test_postgres_load_in_a_shadow_run_writes_nothing(
    pg: Postgres, artifacts: ArtifactStore, three_rows: dict[str, Any]
) -> None:
    shadow_table = pg.table("etl_shadow")
    shadow = pg_load(artifacts, pg.url, three_rows, shadow_table, "create", sandboxed=True)
    assert not pg.exists(shadow_table)

    real = pg_load(artifacts, pg.url, three_rows, shadow_table, "create")
    assert pg.exists(shadow_table)
    assert shadow == real


def test_postgres_load_failing_mid_copy_leaves_the_target_unchanged(
    pg: Postgres, artifacts: ArtifactStore
) -> None:
    source = pg_extract(
        artifacts,
        pg.url,
        "SELECT g AS id, g AS v FROM generate_series(1, 7) g",
        node_id="source",
    )
    table = pg.table("etl_checked")
    pg.execute(f"CREATE TABLE {table} (id int4, v int4 CHECK (v <> 5))")
    pg.execute(f"INSERT INTO {table} VALUES (100, 100)")

    with pytest.raises(NodeFailedError, match="check constraint"):
        pg_load(artifacts, pg.url, source, table, "append", batch_size=2)
    assert pg.rows(f"SELECT id, v FROM {table}") == [(100, 100)]


@pytest.mark.parametrize("mode", ["replace", "create", "append"])
def test_postgres_load_failing_mid_copy_is_one_transaction(
    pg: Postgres, artifacts: ArtifactStore, mode: str
) -> None:
    # PostgreSQL text cannot hold a NUL character: the fifth row fails the COPY
    # after two batches of two rows have been sent, refused naming its column.
    rows = ["a", "b", "c", "d", "bad\x00row", "f"]
    source = table_output(
        artifacts,
        "source",
        pa.table({"id": pa.array(range(len(rows)), pa.int32()), "name": pa.array(rows)}),
    )
    table = pg.table("etl_kept")
    if mode != "create":
        pg.execute(f"CREATE TABLE {table} (id int4, name text)")
        pg.execute(f"INSERT INTO {table} VALUES (100, 'kept')")

    with pytest.raises(NodeFailedError, match=r"column 'name' holds text with a NUL character"):
        pg_load(artifacts, pg.url, source, table, mode, batch_size=2)
    if mode == "create":
        assert not pg.exists(table)
    else:
        assert pg.rows(f"SELECT id, name FROM {table}") == [(100, "kept")]


def test_postgres_load_quotes_column_names_and_keeps_special_values(
    pg: Postgres, artifacts: ArtifactStore
) -> None:
    source = pg_extract(
        artifacts,
        pg.url,
        """SELECT 1 AS "Order", 'NaN'::float8 AS "select", 'Infinity'::float8 AS "two words",
        '-Infinity'::float4 AS low, interval '1 day 2 hours 0.5 seconds' AS span,
        time '13:45:01.5' AS at_time, E'\\\\.' AS eof_marker""",
        node_id="source",
    )
    table = pg.table("etl_special")
    pg_load(artifacts, pg.url, source, table, "create")
    assert pg.columns(table) == [
        "Order",
        "select",
        "two words",
        "low",
        "span",
        "at_time",
        "eof_marker",
    ]
    again = pg_extract(artifacts, pg.url, f"SELECT * FROM {table}", node_id="again")
    assert reference(again).columns == reference(source).columns
    assert reference(again).fingerprint == reference(source).fingerprint
    assert pg.rows(
        f"SELECT \"select\" = 'NaN', \"two words\" = 'Infinity', low = '-Infinity', "
        f"span = interval '1 day 2 hours 0.5 seconds', eof_marker FROM {table}"
    ) == [(True, True, True, True, "\\.")]


# -- the connection pool ------------------------------------------------------------------


def backend_pid(artifacts: ArtifactStore, url: str, node_id: str) -> int:
    output = pg_extract(artifacts, url, "SELECT pg_backend_pid() AS pid", node_id=node_id)
    (pid,) = read(artifacts, output).column("pid").to_pylist()
    return int(pid)


def test_consecutive_extracts_reuse_one_server_connection(
    pg: Postgres, artifacts: ArtifactStore
) -> None:
    first = backend_pid(artifacts, pg.url, "first")
    second = backend_pid(artifacts, pg.url, "second")
    assert first == second
    assert first != pg.connection.info.backend_pid

    # close_all_pools() really closes it (what the teardown of every test relies on).
    close_all_pools()
    assert wait_until_gone(pg, first)


def wait_until_gone(pg: Postgres, pid: int, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pg.rows("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)) == [(0,)]:
            return True
        time.sleep(0.02)
    return False


def test_consecutive_mysql_extracts_reuse_one_server_connection(
    my: Mysql, artifacts: ArtifactStore
) -> None:
    ids = [
        read(artifacts, my_extract(artifacts, my.url, "SELECT CONNECTION_ID() AS id", node_id=n))
        .column("id")
        .to_pylist()
        for n in ("first", "second")
    ]
    assert ids[0] == ids[1]


def test_a_pooled_connection_killed_while_idle_is_replaced_not_handed_out(
    pg: Postgres, artifacts: ArtifactStore
) -> None:
    pid = backend_pid(artifacts, pg.url, "first")
    assert pg.rows("SELECT pg_terminate_backend(%s)", (pid,)) == [(True,)]
    assert wait_until_gone(pg, pid)

    # The pool checks an idle connection before handing it out: the dead one is dropped
    # and the next node runs on a fresh connection.
    assert backend_pid(artifacts, pg.url, "second") != pid


# -- a database outage through the runtime ------------------------------------------------

PASSWORD = "Pr0xy-pa55word"


def kill_when_sleeping(pg_url: str, proxy: TcpProxy, done: threading.Event) -> threading.Thread:
    """Drops the proxy's connections once PostgreSQL runs pg_sleep for one of them."""

    def watch() -> None:
        with psycopg.connect(pg_url, autocommit=True) as watcher:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                ports = list(proxy.upstream_ports)
                (sleeping,) = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event = 'PgSleep' AND client_port = ANY(%s)",
                    (ports,),
                ).fetchone() or (0,)
                if sleeping:
                    proxy.drop_connections()
                    done.set()
                    return
                time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_database_outage_mid_run_retries_then_fails(
    store: Store,
    pg_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parts = urlsplit(pg_url)
    database = parts.path.lstrip("/")
    runtime = NodeRuntime(
        store,
        default_registry(),
        heartbeat_seconds=0.05,
        artifacts=ArtifactStore(str(tmp_path / "artifacts")),
    )
    with TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432)) as proxy:
        where = f"postgresql://postgres@127.0.0.1:{proxy.port}/{database}"
        monkeypatch.setenv(
            "FIGWAY_SECRET_PG_FLAKY",
            f"postgresql://postgres:{PASSWORD}@127.0.0.1:{proxy.port}/{database}",
        )
        plan = start_run(
            store,
            {
                "extract": {
                    "type": "postgres_extract",
                    "config": {
                        "connection": "secret:pg-flaky",
                        "query": "SELECT pg_sleep(2) AS slept, 1 AS id",
                        "connect_timeout_seconds": 2,
                    },
                    "retries": 2,
                }
            },
        )

        dropped = threading.Event()
        watcher = kill_when_sleeping(pg_url, proxy, dropped)
        first = runtime.execute(job_run_id=plan.job_run_id, node_id="extract", attempt=1)
        watcher.join(timeout=30)
        assert dropped.is_set(), "the query never reached pg_sleep through the proxy"
        assert first.outcome is Outcome.RETRY
        assert first.error is not None
        assert f"lost the connection to PostgreSQL at {where}" in first.error

        proxy.stop()  # the server is gone: connections are refused
        second = runtime.execute(job_run_id=plan.job_run_id, node_id="extract", attempt=2)
        assert second.outcome is Outcome.RETRY
        assert second.error is not None
        assert f"cannot connect to PostgreSQL at {where}" in second.error

        third = runtime.execute(job_run_id=plan.job_run_id, node_id="extract", attempt=3)
        assert third.outcome is Outcome.FAILED
        assert third.error is not None
        assert f"cannot connect to PostgreSQL at {where}" in third.error

    run = store.get_run(job_run_id=plan.job_run_id)
    assert run is not None
    extract = run.nodes["extract"]
    assert (extract.status, extract.attempts) == (NodeStatus.FAILED, 3)
    assert extract.error == third.error
    logged = [record.message for _, record in store.logs(job_run_id=plan.job_run_id)]
    assert logged, "the failed attempts logged nothing"
    for text in [first.error, second.error, third.error, extract.error, *logged]:
        assert PASSWORD not in text
        assert "***" not in text  # nothing had to be masked: the password was never quoted


# -- found in review: limits, kills and inputs ---------------------------------------------


def test_postgres_extract_statement_timeout_bounds_the_whole_extract_not_each_fetch(
    pg: Postgres, artifacts: ArtifactStore
) -> None:
    # Each FETCH of 2 rows sleeps 0.6 s, under the timeout; the whole extract does not.
    with pytest.raises(NodeFailedError, match=r"ran longer than statement_timeout_seconds \(1 s\)"):
        pg_extract(
            artifacts,
            pg.url,
            "SELECT g, pg_sleep(0.3) FROM generate_series(1, 10) AS g",
            batch_size=2,
            statement_timeout_seconds=1,
        )


def test_postgres_extract_of_a_numeric_wider_than_38_digits_is_exact_text(
    pg: Postgres, artifacts: ArtifactStore
) -> None:
    value = "123456789012345678901234567890123456789012345678.25"
    output = pg_extract(artifacts, pg.url, f"SELECT {value}::numeric(50, 2) AS big")
    reference = ArtifactRef.from_output(output)
    assert reference is not None
    assert reference.columns == (("big", "string"),)
    with artifacts.open_table(reference) as table:
        assert table.read().column("big").to_pylist() == [value]


def test_killing_the_run_interrupts_a_postgres_query_still_computing(
    pg: Postgres, artifacts: ArtifactStore
) -> None:
    """A query busy before its first row is cancelled on the server, not waited for."""
    context = make_context(artifacts, "slow")
    settings = PostgresExtractConfig.model_validate(
        {"connection": pg.url, "query": "SELECT pg_sleep(60) AS done"}
    )
    killer = threading.Timer(0.5, context.cancel_event.set)
    killer.start()
    try:
        # Without the interrupt this would return a row after 60 s, and raise nothing.
        with pytest.raises(NodeFailedError, match="cancelled the query"):
            run_postgres_extract(settings, context)
    finally:
        killer.cancel()


def test_killing_the_run_interrupts_a_duckdb_query_still_computing(
    artifacts: ArtifactStore,
) -> None:
    context = make_context(artifacts, "slow", upstream={"x": [{"a": 1}]})
    # Billions of rows: it would run for minutes before handing over its one row.
    settings = SqlTransformConfig.model_validate(
        {"query": "SELECT sum(hash(i)) AS h FROM range(100000000000) t(i)"}
    )
    killer = threading.Timer(0.5, context.cancel_event.set)
    killer.start()
    try:
        with pytest.raises(NodeCancelledError):
            run_sql_transform(settings, context)
    finally:
        killer.cancel()


def test_an_http_request_json_answer_is_a_table_for_a_transform(
    artifacts: ArtifactStore,
) -> None:
    answer = {"status": 200, "headers": {}, "json": [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]}
    output = transform(artifacts, "SELECT count(*) AS n, max(v) AS top FROM api", {"api": answer})
    reference = ArtifactRef.from_output(output)
    assert reference is not None
    with artifacts.open_table(reference) as table:
        assert table.read().to_pylist() == [{"n": 2, "top": "b"}]


def test_a_transform_result_no_table_can_hold_is_refused_naming_the_column(
    artifacts: ArtifactStore,
) -> None:
    with pytest.raises(TypeError, match=r"column 'gap' is month_day_nano_interval.*cast"):
        transform(artifacts, "SELECT INTERVAL 1 MONTH AS gap", {})
    leftovers = [p for p in Path(artifacts.root).rglob("*") if p.is_file()]
    assert leftovers == []
