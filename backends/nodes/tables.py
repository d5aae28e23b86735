"""What the extract nodes share: query parameters, rows into Arrow batches, progress lines."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
from pydantic import Field

from backends.artifacts import ArtifactRef
from backends.model.errors import NodeCancelledError, NodeFailedError
from backends.nodes.base import NodeConfig, NodeContext

__all__ = [
    "PARAMETER_PREFIX",
    "Converter",
    "Progress",
    "QueryConfig",
    "ScalarParameter",
    "bind_parameters",
    "interrupt_on_cancel",
    "json_rows_table",
    "require_unique_names",
    "rows_to_batch",
    "write_query_result",
]

#: A query parameter written ``param:NAME`` takes the run's parameter NAME.
PARAMETER_PREFIX = "param:"

ScalarParameter = str | int | float | bool | None

#: Turns one column's values (as the driver returns them) into what Arrow takes.
Converter = Callable[[Sequence[Any]], Sequence[Any]]


class QueryConfig(NodeConfig):
    """The fields of every node that runs a query on a database and outputs its rows."""

    query: str = Field(
        min_length=1,
        max_length=1_000_000,
        description="One SELECT; named parameters are written %(name)s.",
    )
    parameters: dict[str, ScalarParameter] = Field(
        default_factory=dict,
        max_length=100,
        description='Values bound to the query; "param:NAME" takes the run parameter NAME.',
    )
    batch_size: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="Rows fetched (and written) at a time: what a worker holds in memory.",
    )


def write_query_result(
    context: NodeContext,
    schema: pa.Schema,
    converters: Sequence[Converter | None],
    fetch: Callable[[], Sequence[Sequence[Any]]],
    progress: Progress,
) -> ArtifactRef:
    """Write what ``fetch`` returns, batch after batch until an empty one, as a table."""
    require_unique_names(schema, "the query")
    with context.table_store().new_table(schema) as table:
        while rows := fetch():
            table.write(rows_to_batch(rows, schema, converters))
            progress.add(len(rows))
            if context.cancelled():
                raise NodeCancelledError("extract stopped: the run was cancelled")
        return table.finish()


@contextmanager
def interrupt_on_cancel(context: NodeContext, interrupt: Callable[[], object]) -> Iterator[None]:
    """Call ``interrupt`` (a driver's cancel) as soon as the run is killed, while the block
    runs: a query computing its first rows is stopped, not waited for."""
    finished = threading.Event()

    def watch() -> None:
        while not finished.is_set():
            if context.cancel_event.wait(0.2):
                if not finished.is_set():
                    with contextlib.suppress(Exception):  # the query may end meanwhile
                        interrupt()
                return

    watcher = threading.Thread(target=watch, name=f"cancel-{context.node_id}", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        finished.set()
        watcher.join()


def bind_parameters(
    parameters: Mapping[str, ScalarParameter], run_parameters: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The values to bind: literals as written, ``param:NAME`` from the run's parameters.

    None when there are none, so the driver leaves a ``%`` in the query alone.

    >>> bind_parameters({"day": "param:day", "limit": 10}, {"day": "2026-11-28"})
    {'day': '2026-11-28', 'limit': 10}
    """
    if not parameters:
        return None
    bound: dict[str, Any] = {}
    for name, value in parameters.items():
        if isinstance(value, str) and value.startswith(PARAMETER_PREFIX):
            key = value[len(PARAMETER_PREFIX) :]
            if key not in run_parameters:
                raise NodeFailedError(
                    f"query parameter {name!r} takes the run parameter {key!r}, which this run "
                    f"was not given (it has: {', '.join(sorted(run_parameters)) or 'none'})"
                )
            bound[name] = run_parameters[key]
        else:
            bound[name] = value
    return bound


def require_unique_names(schema: pa.Schema, what: str) -> None:
    """Fail when two columns share a name: no downstream node could tell them apart.

    >>> require_unique_names(pa.schema([("id", pa.int64()), ("id", pa.int64())]), "the query")
    Traceback (most recent call last):
    ...
    backends.model.errors.NodeFailedError: the query returns two columns named 'id'; name each one (... AS name)
    """
    seen: set[str] = set()
    for name in schema.names:
        if name in seen:
            raise NodeFailedError(
                f"{what} returns two columns named {name!r}; name each one (... AS name)"
            )
        seen.add(name)


def json_rows_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """A JSON list of objects as a table: one column per key any object has, in order of
    appearance, null where an object lacks it (Arrow's from_pylist looks at the first only).

    >>> json_rows_table([{"id": 1}, {"id": 2, "note": "x"}]).column_names
    ['id', 'note']
    """
    keys = list(dict.fromkeys(key for row in rows for key in row))
    return pa.Table.from_pydict({key: [row.get(key) for row in rows] for key in keys})


def rows_to_batch(
    rows: Sequence[Sequence[Any]],
    schema: pa.Schema,
    converters: Sequence[Converter | None],
) -> pa.RecordBatch:
    """Driver rows (tuples) as one Arrow batch of ``schema``; fails naming the column."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    arrays = []
    for field, values, convert in zip(schema, columns, converters, strict=True):
        try:
            arrays.append(pa.array(convert(values) if convert else values, type=field.type))
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            raise NodeFailedError(
                f"column {field.name!r} does not fit {field.type}: {exc}; cast it in the query"
            ) from None
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


class Progress:
    """Logs how far a long extract or load has got, at most every ``every`` seconds."""

    def __init__(self, context: NodeContext, verb: str, every: float = 10.0) -> None:
        self.context = context
        self.verb = verb
        self.every = every
        self.rows = 0
        self.started = time.monotonic()
        self._last = self.started

    def add(self, rows: int) -> None:
        self.rows += rows
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self.context.logger.info("%s %d rows so far", self.verb, self.rows)

    def done(self, where: str) -> None:
        seconds = time.monotonic() - self.started
        rate = self.rows / seconds if seconds > 0 else float(self.rows)
        self.context.logger.info(
            "%s %d rows %s in %.1f s (%.0f rows/s)", self.verb, self.rows, where, seconds, rate
        )
