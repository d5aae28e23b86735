"""The postgres nodes' binary COPY paths (ADBC) against the real PostgreSQL and MariaDB.

A postgres extract whose columns all have types the driver reads exactly goes
over binary COPY into Arrow; a load into a table it makes goes back the same
way. Each test here checks that the path was taken, and that it gives what
the psycopg and CSV paths give: the same values, types and fingerprint, so
the path a table took never shows in its outputs. Memory flatness is checked
by the benchmark (``make bench-etl``), not here.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

import backends.nodes.postgres as postgres_node
from backends.artifacts import ArtifactStore
from backends.nodes import NodeFailedError
from backends.nodes.postgres import PostgresExtractConfig, run_postgres_extract
from tests.nodes.test_etl_nodes import (
    Mysql,
    Postgres,
    _no_pooled_connection_outlives_its_test,
    artifacts,
    by_id,
    make_context,
    my,
    my_extract,
    pg,
    pg_extract,
    pg_load,
    read,
    reference,
    table_output,
)

__all__ = ["_no_pooled_connection_outlives_its_test", "artifacts", "my", "pg"]

pytestmark = pytest.mark.service

UTC = dt.UTC


@pytest.fixture
def paths(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts the extracts and loads that went over binary COPY."""
    taken = {"extract": 0, "load": 0}
    extract, load = postgres_node._extract_over_copy, postgres_node._load_over_binary_copy

    def counted_extract(*args: Any, **kwargs: Any) -> Any:
        taken["extract"] += 1
        return extract(*args, **kwargs)

    def counted_load(*args: Any, **kwargs: Any) -> Any:
        taken["load"] += 1
        return load(*args, **kwargs)

    monkeypatch.setattr(postgres_node, "_extract_over_copy", counted_extract)
    monkeypatch.setattr(postgres_node, "_load_over_binary_copy", counted_load)
    return taken


@pytest.fixture
def psycopg_only(monkeypatch: pytest.MonkeyPatch) -> Callable[[], Iterator[None]]:
    """A context in which the nodes take the psycopg extract and the CSV load."""
    import contextlib

    @contextlib.contextmanager
    def forced() -> Iterator[None]:
        with monkeypatch.context() as patch:
            patch.setattr(postgres_node, "arrow_readable", lambda oids: False)
            patch.setattr(postgres_node, "arrow_writable", lambda schema: False)
            yield

    return forced


TYPED_TABLE = """
CREATE TABLE {table} (
    id int4, small int2, big int8, price numeric(10, 2), wide numeric(38, 10),
    free numeric, huge numeric(50, 2), label text, code varchar(20), fixed char(3),
    flag bool, day date, at timestamp, at_tz timestamptz, clock time, raw bytea,
    single float4, double float8
)
"""
TYPED_ROWS = """
INSERT INTO {table} VALUES
(1, -32768, -9223372036854775808, -99999999.99, 1234567890123456789012345678.0123456789,
 0.125, 123456789012345678901234567890123456789012345678.25, 'plain', 'A-1', 'ab', true,
 '2024-02-29', '2024-02-29 13:45:01.123456', '2024-02-29 13:45:01.5+05:30', '23:59:59.999999',
 '\\x00ff10', 1.5, 'NaN'),
(2, 32767, 9223372036854775807, 0.01, -0.0000000001, -2.5e-7, 0, '', '', '', false,
 '0001-01-01', '1970-01-01 00:00:00', '1900-06-30 23:00:00-03', '00:00', '\\x', '-Infinity',
 1e308),
(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL),
(4, 0, 0, 0, 0, 1e-3, -1.5, E'quote " comma , newline \\n backslash \\\\ tab \\t',
 'é', 'x', true, '9999-12-31', '2000-01-01 00:00:00.000001', '2262-04-11 23:47:16.854775+00',
 '12:00', '\\x5c2e0a', 3.4e38, -0.0)
"""


@pytest.fixture
def typed_table(pg: Postgres) -> str:
    table = pg.table("arrow_types")
    pg.execute(TYPED_TABLE.format(table=table))
    pg.execute(TYPED_ROWS.format(table=table))
    return table


def without_nan(rows: list[Any]) -> list[Any]:
    """Rows with NaN written "NaN": NaN equals nothing, not even itself, in Python."""

    def plain(value: Any) -> Any:
        return "NaN" if isinstance(value, float) and math.isnan(value) else value

    return [
        {k: plain(v) for k, v in row.items()} if isinstance(row, dict) else tuple(map(plain, row))
        for row in rows
    ]


def extract_both_ways(
    pg: Postgres,
    artifacts: ArtifactStore,
    psycopg_only: Callable[[], Any],
    query: str,
    **config: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    fast = pg_extract(artifacts, pg.url, query, node_id="fast", **config)
    with psycopg_only():
        slow = pg_extract(artifacts, pg.url, query, node_id="slow", **config)
    return fast, slow


def test_every_readable_type_comes_over_binary_copy_as_psycopg_reads_it(
    pg: Postgres,
    typed_table: str,
    artifacts: ArtifactStore,
    paths: dict[str, int],
    psycopg_only: Callable[[], Any],
) -> None:
    fast, slow = extract_both_ways(pg, artifacts, psycopg_only, f"SELECT * FROM {typed_table}")

    assert paths["extract"] == 1  # the first went over binary COPY, the second did not
    assert reference(fast).columns == reference(slow).columns
    assert reference(fast).fingerprint == reference(slow).fingerprint
    rows = by_id(read(artifacts, fast))
    assert without_nan(rows) == without_nan(by_id(read(artifacts, slow)))
    first, second, nulls, tricky = rows
    schema = dict(reference(fast).columns)
    assert schema["price"] == "decimal128(10, 2)"
    assert schema["free"] == "double"
    assert schema["huge"] == "string"
    assert first["price"] == Decimal("-99999999.99")
    assert first["wide"] == Decimal("1234567890123456789012345678.0123456789")
    assert first["huge"] == "123456789012345678901234567890123456789012345678.25"
    assert first["at_tz"] == dt.datetime(2024, 2, 29, 8, 15, 1, 500000, tzinfo=UTC)
    assert first["fixed"] == "ab "
    assert second["big"] == 9223372036854775807
    assert second["label"] == second["code"] == ""
    assert second["raw"] == b""
    assert second["day"] == dt.date(1, 1, 1)
    assert second["at_tz"] == dt.datetime(1900, 7, 1, 2, 0, tzinfo=UTC)
    assert nulls == {"id": 3, **{name: None for name in schema if name != "id"}}
    assert tricky["label"] == 'quote " comma , newline \n backslash \\ tab \t'
    assert tricky["code"] == "é"


def test_an_empty_result_over_binary_copy_has_the_columns_and_no_rows(
    pg: Postgres,
    typed_table: str,
    artifacts: ArtifactStore,
    paths: dict[str, int],
    psycopg_only: Callable[[], Any],
) -> None:
    empty = pg.table("arrow_empty")
    pg.execute(f"CREATE TABLE {empty} (LIKE {typed_table})")
    for query in (f"SELECT * FROM {empty}", f"SELECT * FROM {typed_table} WHERE false"):
        fast, slow = extract_both_ways(pg, artifacts, psycopg_only, query)
        assert reference(fast).rows == 0
        assert reference(fast).columns == reference(slow).columns
        assert reference(fast).fingerprint == reference(slow).fingerprint
        assert read(artifacts, fast).num_rows == 0
    assert paths["extract"] == 2


def test_a_wide_table_of_long_rows_comes_over_in_batches_of_batch_size(
    pg: Postgres, artifacts: ArtifactStore, paths: dict[str, int], psycopg_only: Callable[[], Any]
) -> None:
    columns = ", ".join(f"repeat(md5((g * {i})::text), 30) AS c{i}" for i in range(120))
    query = f"SELECT g AS id, {columns} FROM generate_series(1, 250) g"
    fast, slow = extract_both_ways(pg, artifacts, psycopg_only, query, batch_size=100)
    assert paths["extract"] == 1
    assert reference(fast).rows == 250
    assert reference(fast).fingerprint == reference(slow).fingerprint
    path = artifacts.local_path(reference(fast))
    assert path is not None
    import pyarrow.parquet as pq

    assert [
        pq.ParquetFile(path).metadata.row_group(i).num_rows
        for i in range(pq.ParquetFile(path).num_row_groups)
    ] == [100, 100, 50]


def test_parameters_are_bound_over_binary_copy_as_psycopg_binds_them(
    pg: Postgres,
    typed_table: str,
    artifacts: ArtifactStore,
    paths: dict[str, int],
    psycopg_only: Callable[[], Any],
) -> None:
    # A date given as a string, and a string with a quote: literals of unknown type, as
    # psycopg sends them, so PostgreSQL reads the first as a date.
    query = (
        f"SELECT id, %(note)s AS note FROM {typed_table} "
        "WHERE day = %(day)s AND label <> %(quote)s -- the last line is a comment;"
    )
    parameters = {"day": "param:day", "note": "it's", "quote": "'; DROP TABLE x; --"}
    fast, slow = extract_both_ways(
        pg,
        artifacts,
        psycopg_only,
        query,
        parameters=parameters,
        run_parameters={"day": "2024-02-29"},
    )
    assert paths["extract"] == 1
    assert read(artifacts, fast).to_pylist() == [{"id": 1, "note": "it's"}]
    assert reference(fast).fingerprint == reference(slow).fingerprint


def test_a_query_ending_in_a_semicolon_goes_over_binary_copy(
    pg: Postgres, artifacts: ArtifactStore, paths: dict[str, int]
) -> None:
    output = pg_extract(artifacts, pg.url, "SELECT 1 AS one ;  \n")
    assert paths["extract"] == 1
    assert read(artifacts, output).to_pylist() == [{"one": 1}]


def test_types_the_driver_reads_otherwise_take_the_psycopg_path(
    pg: Postgres, artifacts: ArtifactStore, paths: dict[str, int]
) -> None:
    output = pg_extract(
        artifacts,
        pg.url,
        "SELECT 1 AS id, gen_random_uuid() AS ref, '{\"a\": 1}'::jsonb AS doc, 26::oid AS o",
    )
    assert paths["extract"] == 0
    assert dict(reference(output).columns) == {
        "id": "int32",
        "ref": "string",
        "doc": "string",
        "o": "int64",
    }


def test_a_statement_timeout_stops_a_binary_copy_extract(
    pg: Postgres, artifacts: ArtifactStore, paths: dict[str, int]
) -> None:
    with pytest.raises(NodeFailedError, match="statement timeout") as failure:
        pg_extract(
            artifacts,
            pg.url,
            "SELECT count(*) AS n FROM generate_series(1, 10000000000)",
            statement_timeout_seconds=0.3,
        )
    assert paths["extract"] == 1
    assert "lost the connection" not in str(failure.value)
    assert read(artifacts, pg_extract(artifacts, pg.url, "SELECT 1 AS one")).num_rows == 1


def test_killing_the_run_cancels_a_binary_copy_extract(
    pg: Postgres, artifacts: ArtifactStore, paths: dict[str, int]
) -> None:
    context = make_context(artifacts, "slow")
    settings = PostgresExtractConfig.model_validate(
        {"connection": pg.url, "query": "SELECT count(*) AS n FROM generate_series(1, 1e11::int8)"}
    )
    killer = threading.Timer(0.5, context.cancel_event.set)
    killer.start()
    try:
        with pytest.raises(NodeFailedError, match="cancelled the query"):
            run_postgres_extract(settings, context)
    finally:
        killer.cancel()
    assert paths["extract"] == 1


# -- the load ----------------------------------------------------------------------------


def test_a_binary_copy_load_writes_what_the_csv_load_writes(
    pg: Postgres,
    typed_table: str,
    artifacts: ArtifactStore,
    paths: dict[str, int],
    psycopg_only: Callable[[], Any],
) -> None:
    source = pg_extract(artifacts, pg.url, f"SELECT * FROM {typed_table}", node_id="source")
    binary, csv = pg.table("arrow_binary"), pg.table("arrow_csv")
    pg_load(artifacts, pg.url, source, binary, "create", batch_size=3)
    with psycopg_only():
        pg_load(artifacts, pg.url, source, csv, "create", batch_size=3)
    assert paths["load"] == 1

    def column_types(table: str) -> list[tuple[Any, ...]]:
        return pg.rows(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 ORDER BY attnum",
            (table,),
        )

    assert column_types(binary) == column_types(csv)
    order = "ORDER BY id"
    assert without_nan(pg.rows(f"SELECT * FROM {binary} {order}")) == without_nan(
        pg.rows(f"SELECT * FROM {csv} {order}")
    )
    # Read back, the loaded table is the table that was loaded.
    again = pg_extract(artifacts, pg.url, f"SELECT * FROM {binary}", node_id="again")
    assert reference(again).fingerprint == reference(source).fingerprint


def test_a_binary_copy_load_of_no_rows_makes_the_empty_table(
    pg: Postgres, artifacts: ArtifactStore, paths: dict[str, int]
) -> None:
    empty = table_output(
        artifacts,
        "source",
        pa.table(
            {
                "id": pa.array([], pa.int64()),
                "at": pa.array([], pa.timestamp("us", tz="UTC")),
                "amount": pa.array([], pa.decimal128(12, 3)),
            }
        ),
    )
    table = pg.table("arrow_none")
    output = pg_load(artifacts, pg.url, empty, table, "replace")
    assert paths["load"] == 1
    assert isinstance(output, dict)
    assert output["rows"] == 0
    assert pg.exists(table)
    assert pg.rows(f"SELECT count(*) FROM {table}") == [(0,)]
    assert pg.columns(table) == ["id", "at", "amount"]


def test_appending_to_a_table_already_there_names_its_columns_over_csv(
    pg: Postgres, artifacts: ArtifactStore, paths: dict[str, int]
) -> None:
    source = table_output(
        artifacts, "source", pa.table({"a": pa.array([1, 2], pa.int32()), "b": ["x", "y"]})
    )
    table = pg.table("arrow_append")
    # Other column order, a column with a default, a wider type: binary COPY sends
    # columns by position and type, so this takes the CSV path, which names them.
    pg.execute(f"CREATE TABLE {table} (b varchar(5), extra int DEFAULT 7, a numeric)")
    pg_load(artifacts, pg.url, source, table, "append")
    assert paths["load"] == 0
    assert pg.rows(f"SELECT b, extra, a FROM {table} ORDER BY a") == [
        ("x", 7, Decimal(1)),
        ("y", 7, Decimal(2)),
    ]
    # A table the load makes itself goes over binary COPY, in a schema too.
    pg_load(artifacts, pg.url, source, f"public.{table}_new", "append")
    pg.execute(f"DROP TABLE public.{table}_new")
    assert paths["load"] == 1


def test_a_mysql_extract_loads_into_postgresql_over_binary_copy(
    my: Mysql, pg: Postgres, artifacts: ArtifactStore, paths: dict[str, int]
) -> None:
    table = my.table("arrow_my")
    my.execute(
        f"CREATE TABLE {table} (id BIGINT, amount DECIMAL(12, 3), label VARCHAR(40), "
        "at DATETIME(6), flag TINYINT)"
    )
    my.execute(
        f"INSERT INTO {table} VALUES (1, 123456789.125, 'été', '2024-02-29 13:45:01.123456', 1),"
        "(2, NULL, NULL, NULL, NULL), (3, -0.001, '', '1970-01-01 00:00:00', 0)"
    )
    source = my_extract(artifacts, my.url, f"SELECT * FROM {table}", node_id="source")
    target = pg.table("arrow_from_my")
    pg_load(artifacts, pg.url, source, target, "create")
    assert paths["load"] == 1
    assert pg.rows(f"SELECT * FROM {target} ORDER BY id") == [
        (1, Decimal("123456789.125"), "été", dt.datetime(2024, 2, 29, 13, 45, 1, 123456), 1),
        (2, None, None, None, None),
        (3, Decimal("-0.001"), "", dt.datetime(1970, 1, 1), 0),
    ]


@pytest.mark.parametrize("binary", [True, False], ids=["binary-copy", "csv"])
def test_text_with_a_nul_character_from_mariadb_is_refused_naming_the_column(
    my: Mysql,
    pg: Postgres,
    artifacts: ArtifactStore,
    paths: dict[str, int],
    psycopg_only: Callable[[], Any],
    binary: bool,
) -> None:
    table = my.table("arrow_nul")
    my.execute(f"CREATE TABLE {table} (id INT, note VARCHAR(20))")
    my.execute(f"INSERT INTO {table} VALUES (1, 'fine'), (2, CONCAT('a', CHAR(0), 'b'))")
    source = my_extract(artifacts, my.url, f"SELECT * FROM {table}", node_id="source")
    target = pg.table("arrow_nul")
    expected = r"column 'note' holds text with a NUL character \(U\+0000\)"
    if binary:
        with pytest.raises(NodeFailedError, match=expected):
            pg_load(artifacts, pg.url, source, target, "create")
        assert paths["load"] == 1
    else:
        with psycopg_only(), pytest.raises(NodeFailedError, match=expected):
            pg_load(artifacts, pg.url, source, target, "create")
    assert not pg.exists(target)


def test_a_binary_copy_load_refuses_a_url_option_nodes_may_not_use(
    pg: Postgres,
    artifacts: ArtifactStore,
    paths: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A secret is checked only when the node runs: its URL may carry anything.
    monkeypatch.setenv("FIGWAY_SECRET_PG_ELSEWHERE", pg.url + "?host=203.0.113.1")
    source = table_output(artifacts, "source", pa.table({"id": pa.array([1], pa.int64())}))
    table = pg.table("arrow_refused")
    with pytest.raises(NodeFailedError, match="carries option"):
        pg_load(artifacts, "secret:pg-elsewhere", source, table, "create")
    assert paths["load"] == 1
    assert not pg.exists(table)
