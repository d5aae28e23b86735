"""``sql_transform``: SQL (DuckDB's dialect) over the tables of upstream nodes.

Each upstream table is visible under its node's id (quote ids that are not
plain identifiers: ``"extract-pg"``). An upstream output that is a JSON list
of objects (a ``python`` node's, or the ``json`` answer of an ``http_request``)
is visible as a table too. Nodes that output neither are not in view.

DuckDB reads the upstream Parquet files itself (row group by row group) and
hands the result back in record batches, which are written as they come: with
``memory_limit_mb`` bounding DuckDB (it spills to a scratch directory beyond
it), a transform's memory does not grow with its input. The query cannot read
or write files of its own: external access is switched off and locked before
it runs, so a definition cannot reach into the worker's disk.
"""

from __future__ import annotations

import re
import tempfile
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
from pydantic import Field, ValidationInfo, field_validator

from backends.artifacts import ArtifactRef, RunArtifacts
from backends.model.errors import NodeCancelledError, NodeFailedError
from backends.nodes.base import NodeConfig, NodeContext, NodeType, within_operator_cap
from backends.nodes.tables import (
    Progress,
    interrupt_on_cancel,
    json_rows_table,
    require_unique_names,
)

if TYPE_CHECKING:
    import pyarrow.dataset as ds

__all__ = ["SQL_TRANSFORM", "SqlTransformConfig"]

#: Rows handed over by DuckDB (and written) at a time.
BATCH_ROWS = 65_536


class SqlTransformConfig(NodeConfig):
    query: str = Field(
        min_length=1,
        max_length=1_000_000,
        description="One SELECT over the upstream nodes' tables, each named after its node.",
    )
    memory_limit_mb: int = Field(
        default=256, ge=16, le=1_048_576, description="DuckDB's memory limit; it spills beyond."
    )
    threads: int = Field(
        default=1,
        ge=1,
        le=256,
        description="DuckDB's threads. More than one can change the last digits of a "
        "floating-point sum from run to run, and so its fingerprint.",
    )

    @field_validator("memory_limit_mb", "threads")
    @classmethod
    def _capped(cls, value: int, info: ValidationInfo) -> int:
        return within_operator_cap(value, info)

    @field_validator("query")
    @classmethod
    def _one_select(cls, query: str) -> str:
        problem = _statement_problem(query)
        if problem is not None:
            raise ValueError(problem)
        return query


def _statement_problem(query: str) -> str | None:
    """Why ``query`` is not one SELECT, or None (also None when it does not parse: DuckDB
    says what is wrong with it when it runs, with the tables in view)."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error:
        return None
    if len(statements) > 1:
        return "one SELECT only: the query holds several statements"
    if statements and statements[0].type != duckdb.StatementType.SELECT:
        return f"one SELECT only: this is a {statements[0].type.name} statement"
    return None


def _dataset(artifacts: RunArtifacts, reference: ArtifactRef) -> ds.Dataset:
    # Imported here: only tables in object storage need it, and it is 16 MB resident in
    # every process that imports it (a Prefect flow-run process imports every node type).
    import pyarrow.dataset as ds
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    store = artifacts.store
    if store.is_local:
        return ds.dataset(store.path_of(reference), format="parquet")
    filesystem = PyFileSystem(FSSpecHandler(store.fs))
    return ds.dataset(store.path_of(reference), format="parquet", filesystem=filesystem)


def _json_rows(output: Any) -> list[dict[str, Any]] | None:
    """A JSON output that is a list of objects: the output itself, or an http_request's
    ``json`` answer."""
    if isinstance(output, dict) and "status" in output and "json" in output:
        output = output["json"]
    if isinstance(output, list) and output and all(isinstance(row, dict) for row in output):
        return output
    return None


def _register_inputs(
    connection: duckdb.DuckDBPyConnection, context: NodeContext, artifacts: RunArtifacts
) -> list[str]:
    """Make every upstream table visible under its node's id; returns their names."""
    names, local_files = [], []
    for node_id, output in context.upstream_outputs.items():
        reference = ArtifactRef.from_output(output)
        if reference is not None:
            path = artifacts.store.local_path(reference)
            if path is not None:
                if not path.is_file():
                    raise NodeFailedError(
                        f"the table of upstream node {node_id!r} is gone from the artifact "
                        "store (purged, or this worker reaches another store)"
                    )
                # DuckDB's own Parquet reader streams row groups; an Arrow dataset would
                # hold the whole input in Arrow memory. The view is read while the query
                # runs, when only the files allowed below may be read.
                connection.execute(
                    f"CREATE VIEW {_identifier(node_id)} AS SELECT * FROM read_parquet("
                    f"{_string(str(path))})"
                )
                local_files.append(str(path))
            else:
                connection.register(node_id, _dataset(artifacts, reference))
        elif (rows := _json_rows(output)) is not None:
            try:
                connection.register(node_id, json_rows_table(rows))
            except (pa.ArrowException, TypeError, ValueError) as exc:
                raise NodeFailedError(
                    f"the JSON output of upstream node {node_id!r} is not a table: {exc}"
                ) from None
        else:
            continue  # not a table; the query cannot refer to it
        names.append(node_id)
    # Only the upstream files may be read; set before external access is switched off
    # and the configuration locked, so the query cannot widen it.
    connection.execute(f"SET allowed_paths = [{', '.join(_string(f) for f in local_files)}]")
    return names


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def run_sql_transform(config: SqlTransformConfig, context: NodeContext) -> object:
    artifacts = context.table_store()
    progress = Progress(context, "transformed")
    with tempfile.TemporaryDirectory(prefix="figway-transform-") as scratch:
        connection = duckdb.connect(
            config={
                "threads": context.policy.capped("threads", config.threads),
                "memory_limit": f"{context.policy.capped('memory_limit_mb', config.memory_limit_mb)}MB",
                "temp_directory": scratch,
                # Row order is not part of a table's fingerprint; not keeping it saves memory.
                "preserve_insertion_order": False,
            }
        )
        try:
            names = _register_inputs(connection, context, artifacts)
            # Timestamps with a time zone come back in UTC, as extracts write them, whatever
            # the worker's zone: otherwise two workers would fingerprint one table differently.
            connection.execute("SET TimeZone = 'UTC'")
            connection.execute("SET enable_external_access = false")
            connection.execute("SET lock_configuration = true")
            # Armed before the query starts: an aggregate computes everything before its
            # first batch, and a kill must stop it there too.
            with interrupt_on_cancel(context, connection.interrupt):
                reference = _run_query(config, context, connection, artifacts, names, progress)
        finally:
            connection.close()
    progress.done("with DuckDB")
    return reference.to_output()


def _run_query(
    config: SqlTransformConfig,
    context: NodeContext,
    connection: duckdb.DuckDBPyConnection,
    artifacts: RunArtifacts,
    names: list[str],
    progress: Progress,
) -> ArtifactRef:
    try:
        reader = connection.sql(config.query.strip().rstrip(";")).to_arrow_reader(BATCH_ROWS)
        schema = _plain_schema(reader.schema)
        require_unique_names(schema, "the query")
        with artifacts.new_table(schema) as table:
            for batch in reader:
                table.write(batch.cast(schema))
                progress.add(batch.num_rows)
                if context.cancelled():
                    raise NodeCancelledError("transform stopped: the run was cancelled")
            return table.finish()
    except (duckdb.Error, RuntimeError) as exc:
        # An interrupted query raises a bare RuntimeError("Query interrupted").
        if context.cancelled():
            raise NodeCancelledError("transform stopped: the run was cancelled") from None
        if not isinstance(exc, duckdb.Error):
            raise
        raise NodeFailedError(
            f"DuckDB refused the query: {_first_line(exc)} (tables: {', '.join(names) or 'none'})"
        ) from None


def _plain_schema(schema: pa.Schema) -> pa.Schema:
    """DuckDB may hand over string views; tables keep plain strings, readable everywhere."""
    return pa.schema(
        pa.field(f.name, pa.string() if pa.types.is_string_view(f.type) else f.type) for f in schema
    )


def _first_line(exc: BaseException) -> str:
    text = re.sub(r"\s+", " ", str(exc)).strip()
    return text[:2_000] or type(exc).__name__


SQL_TRANSFORM = NodeType(
    "sql_transform",
    SqlTransformConfig,
    run_sql_transform,
    "Runs SQL (DuckDB) over the upstream nodes' tables; outputs the result as a table.",
)
