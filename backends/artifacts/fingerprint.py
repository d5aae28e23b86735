"""Fingerprints: equal for equal tables, whatever their row order or file layout.

A table's fingerprint hashes its columns (names and types), its row count and
the sum, modulo 2**64, of DuckDB's hash of every row. A sum does not depend
on order, so a transform whose engine returns rows in a different order on
another run (DuckDB's parallel aggregates do) still matches, and a table
written in batches of any size hashes the same as the whole. Duplicated rows
still count: the sum of two equal hashes is not zero, unlike an exclusive or.

The row hash is DuckDB's, so fingerprints compare between processes running
the same DuckDB version, which every worker of one figway install does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["Fingerprinter", "columns_of", "fingerprint_file"]

_MODULUS = 2**64
_ROWS_AND_HASHES = "SELECT count(*), coalesce(sum(hash(t)), 0) FROM {source} t"


def columns_of(schema: pa.Schema) -> tuple[tuple[str, str], ...]:
    """A schema as (name, Arrow type) pairs, as references and fingerprints record it."""
    return tuple((field.name, type_text(field.type)) for field in schema)


def type_text(kind: pa.DataType) -> str:
    """An Arrow type as text, without the names Parquet gives list items.

    Arrow calls a list's items ``item`` and Parquet ``element``; a table must
    describe itself the same way before and after a round trip through a file.

    >>> type_text(pa.list_(pa.field("element", pa.string()))) == type_text(pa.list_(pa.string()))
    True
    """
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_list_view(kind):
        return f"list<{type_text(kind.value_type)}>"
    if pa.types.is_fixed_size_list(kind):
        return f"list<{type_text(kind.value_type)}>[{kind.list_size}]"
    if pa.types.is_map(kind):
        return f"map<{type_text(kind.key_type)}, {type_text(kind.item_type)}>"
    if pa.types.is_struct(kind):
        fields = ", ".join(f"{f.name}: {type_text(f.type)}" for f in kind)
        return f"struct<{fields}>"
    return str(kind)


def _digest(columns: Sequence[tuple[str, str]], rows: int, hash_sum: int) -> str:
    described = ";".join(f"{name}:{kind}" for name, kind in columns)
    text = f"{described}|{rows}|{hash_sum % _MODULUS}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


#: Rows hashed at a time. Each hashing is a DuckDB query with a fixed cost (about 10 ms):
#: batches of a few thousand rows are gathered first, so a table written in small batches
#: does not pay it per batch. The sum does not depend on how rows are grouped.
HASH_ROWS = 131_072


class Fingerprinter:
    """Adds up a table's fingerprint batch by batch, as the table is written."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.rows = 0
        self._hash_sum = 0
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._connection = duckdb.connect(config={"threads": 1})

    def add(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        self.rows += batch.num_rows
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        if self._pending_rows >= HASH_ROWS:
            self._hash_pending()

    def _hash_pending(self) -> None:
        if not self._pending:
            return
        gathered = pa.Table.from_batches(self._pending, schema=self._pending[0].schema)
        self._pending, self._pending_rows = [], 0
        self._connection.register("figway_batch", gathered)
        try:
            (row,) = self._connection.execute(
                _ROWS_AND_HASHES.format(source="figway_batch")
            ).fetchall()  # an aggregate: one row; fetchall() also completes the result
        finally:
            self._connection.unregister("figway_batch")
        self._hash_sum = (self._hash_sum + int(row[1])) % _MODULUS

    def fingerprint(self) -> str:
        self._hash_pending()
        return _digest(columns_of(self.schema), self.rows, self._hash_sum)

    def close(self) -> None:
        self._pending = []
        self._connection.close()


def fingerprint_file(path: Path, connection: duckdb.DuckDBPyConnection) -> tuple[int, str]:
    """Row count and fingerprint of a local Parquet file, read by ``connection``."""
    source = f"read_parquet('{_sql_string(str(path))}')"
    schema = pq.read_schema(path)
    (row,) = connection.execute(_ROWS_AND_HASHES.format(source=source)).fetchall()
    rows = int(row[0])
    return rows, _digest(columns_of(schema), rows, int(row[1]))


def _sql_string(text: str) -> str:
    return text.replace("'", "''")
