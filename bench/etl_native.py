"""The ETL benchmark's native reference: extract -> Parquet -> transform -> load in one process.

What a plain script with psycopg, pyarrow and DuckDB does for the workflow
``bench.etl`` runs through figway, with no figway code: a server-side cursor
read in batches into a Parquet file, DuckDB's ``COPY`` of the transform into a
second file (with the ``sql_transform`` node's memory limit and threads), and
the second file streamed back with ``COPY ... FROM STDIN`` into a table
replaced in one transaction. No fingerprints, no run records, no process
starts between steps.

    python -m bench.etl_native URL SOURCE TARGET WORKDIR

prints one JSON line: rows per step, seconds per step, and the process's own
peak RSS (``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import time
from pathlib import Path

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from psycopg import sql

__all__ = ["SOURCE_SCHEMA", "TRANSFORM", "main"]

#: The columns of bench.etl's source table, as Arrow reads them.
SOURCE_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("customer_id", pa.int32()),
        ("amount", pa.decimal128(10, 2)),
        ("ordered_on", pa.date32()),
        ("channel", pa.string()),
        ("note", pa.string()),
    ]
)
#: The transform, over a table named ``extract`` (the workflow's first node).
TRANSFORM = "select *, amount * 1.2 as gross from extract"
#: Rows per fetch and per COPY chunk (the nodes default to 10,000, for memory; the script
#: holds whatever it likes, being the reference for time).
BATCH_ROWS = 50_000
#: The sql_transform node's defaults (memory_limit_mb=256, threads=1).
DUCKDB_CONFIG: dict[str, str | int | bool] = {
    "memory_limit": "256MB",
    "threads": 1,
    "preserve_insertion_order": False,
}


def extract(connection: psycopg.Connection[tuple[object, ...]], source: str, path: Path) -> int:
    rows_written = 0
    query = sql.SQL("select * from {}").format(sql.Identifier(source))
    with (
        connection.transaction(),
        connection.cursor(name="native_extract") as cursor,
        pq.ParquetWriter(path, SOURCE_SCHEMA, compression="zstd") as writer,
    ):
        cursor.itersize = BATCH_ROWS
        cursor.execute(query)
        names = [column.name for column in cursor.description or []]
        if names != SOURCE_SCHEMA.names:
            raise SystemExit(f"{source} has columns {names}, expected {SOURCE_SCHEMA.names}")
        while rows := cursor.fetchmany(BATCH_ROWS):
            columns = [
                pa.array(values, type=kind)
                for values, kind in zip(zip(*rows, strict=True), SOURCE_SCHEMA.types, strict=True)
            ]
            writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=SOURCE_SCHEMA))
            rows_written += len(rows)
    return rows_written


def transform(source: Path, target: Path, scratch: Path) -> int:
    connection = duckdb.connect(config={**DUCKDB_CONFIG, "temp_directory": str(scratch)})
    try:
        query = TRANSFORM.replace("from extract", f"from read_parquet('{source}')")
        connection.execute(f"copy ({query}) to '{target}' (format parquet, compression zstd)")
    finally:
        connection.close()
    return int(pq.ParquetFile(target).metadata.num_rows)


def load(
    connection: psycopg.Connection[tuple[object, ...]], source_table: str, path: Path, target: str
) -> int:
    table = sql.Identifier(target)
    rows_loaded = 0
    with connection.transaction():
        connection.execute(sql.SQL("drop table if exists {}").format(table))
        # The script's author knows the target's columns: PostgreSQL types them from the query.
        connection.execute(
            sql.SQL(
                "create table {} as select *, amount * 1.2 as gross from {} with no data"
            ).format(table, sql.Identifier(source_table))
        )
        copy = sql.SQL("copy {} from stdin (format csv)").format(table)
        with connection.cursor() as cursor, cursor.copy(copy) as stream:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS):
                chunk = io.BytesIO()
                pa_csv.write_csv(batch, chunk, pa_csv.WriteOptions(include_header=False))
                stream.write(chunk.getvalue())
                rows_loaded += batch.num_rows
    return rows_loaded


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.etl_native", description=__doc__)
    parser.add_argument("url", help="libpq URL of the database holding both tables")
    parser.add_argument("source", help="the source table")
    parser.add_argument("target", help="the target table (replaced)")
    parser.add_argument("workdir", type=Path, help="where the two Parquet files go")
    args = parser.parse_args(argv)
    extracted_file = args.workdir / "extract.parquet"
    transformed_file = args.workdir / "transform.parquet"
    seconds: dict[str, float] = {}
    rows: dict[str, int] = {}
    with psycopg.connect(args.url) as connection:
        began = time.perf_counter()
        rows["extract"] = extract(connection, args.source, extracted_file)
        seconds["extract"] = time.perf_counter() - began
        began = time.perf_counter()
        rows["transform"] = transform(extracted_file, transformed_file, args.workdir)
        seconds["transform"] = time.perf_counter() - began
        began = time.perf_counter()
        rows["load"] = load(connection, args.source, transformed_file, args.target)
        seconds["load"] = time.perf_counter() - began
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"rows": rows, "seconds": seconds, "peak_rss_kb": peak_kb}))


if __name__ == "__main__":
    main()
