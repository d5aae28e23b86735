"""What each lever of the ETL nodes is worth, node by node, in one process.

    python -m bench.etl_levers [--rows 1000000] [--repeats 3]

Makes a database of its own with ``bench.etl``'s source table, then runs the
postgres nodes as the runtime calls them, each way in turn within every
round (so a busy machine slows each way alike):

- extract: over binary COPY (ADBC), and through psycopg's cursor, forced;
- extract over binary COPY with the fingerprint hashed per batch, as before
  the fingerprinter gathered batches (``HASH_ROWS`` = 1);
- load of the transform's table: binary COPY from Arrow, and CSV, forced.

Prints the seconds of every run and the median per way. The figures of the
whole workflow, with the references, are ``bench.etl``'s.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import backends.artifacts.fingerprint as fingerprint
import backends.nodes.postgres as postgres
from backends.artifacts import ArtifactStore
from backends.nodes import NodeContext
from backends.nodes.transform import SqlTransformConfig, run_sql_transform
from bench.etl_native import TRANSFORM
from bench.etl_runs import EtlDatabase
from bench.stack import StackConfig

__all__ = ["main"]


def _context(store: ArtifactStore, node_id: str, upstream: dict[str, Any]) -> NodeContext:
    return NodeContext(
        job_run_id="levers",
        node_id=node_id,
        attempt=1,
        parameters={},
        upstream_outputs=upstream,
        logger=logging.getLogger(f"bench.levers.{node_id}"),
        artifacts=store.for_attempt(
            job_run_id="levers", node_id=node_id, attempt=1, sandboxed=False
        ),
    )


@contextlib.contextmanager
def _patched(target: Any, name: str, value: Any) -> Iterator[None]:
    saved = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, saved)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.etl_levers", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pg-admin-url", default=StackConfig.pg_admin_url)
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="figway-levers-"))
    store = ArtifactStore(str(scratch))
    with EtlDatabase(args.pg_admin_url) as database:
        source = database.seed(args.rows)
        extract_config = postgres.PostgresExtractConfig.model_validate(
            {"connection": database.url, "query": f"select * from {source}"}
        )
        load_config = postgres.PostgresLoadConfig.model_validate(
            {"connection": database.url, "table": "levers_target", "mode": "replace"}
        )

        def extract() -> object:
            return postgres.run_postgres_extract(extract_config, _context(store, "extract", {}))

        transformed = run_sql_transform(
            SqlTransformConfig.model_validate({"query": TRANSFORM}),
            _context(store, "transform", {"extract": extract()}),
        )

        def load() -> object:
            context = _context(store, "load", {"transform": transformed})
            return postgres.run_postgres_load(load_config, context)

        ways: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
            "extract, binary COPY": contextlib.nullcontext,
            "extract, psycopg": lambda: _patched(postgres, "arrow_readable", lambda oids: False),
            "extract, binary COPY, hash per batch": lambda: _patched(fingerprint, "HASH_ROWS", 1),
            "load, binary COPY": contextlib.nullcontext,
            "load, CSV": lambda: _patched(postgres, "arrow_writable", lambda schema: False),
        }
        seconds: dict[str, list[float]] = {way: [] for way in ways}
        for repeat in range(args.repeats):
            for way, setting in ways.items():
                with setting():
                    began = time.perf_counter()
                    (load if way.startswith("load") else extract)()
                    seconds[way].append(time.perf_counter() - began)
                print(f"#{repeat + 1} {way}: {seconds[way][-1]:.2f} s", flush=True)
    print(f"\n{args.rows:,} rows, median of {args.repeats}:")
    for way, runs in seconds.items():
        print(f"| {way} | {statistics.median(runs):.2f} | {min(runs):.2f}-{max(runs):.2f} |")


if __name__ == "__main__":
    main()
