"""The artifact store: where table outputs live, by run, node and attempt.

A local directory by default (``FIGWAY_DATA_DIR/artifacts``); any fsspec URL
otherwise (``gs://bucket/figway`` with the ``gcs`` extra, ``s3://…`` with the
``s3`` extra). Every worker of both backends must reach the same store: on one
machine that is the shared directory, in a cluster a bucket or shared volume.

Layout: ``runs/<job_run_id>/<node_id>/attempt-<n>-<name>.parquet``, and
``shadow/…`` for shadow runs, so what a shadow run writes is kept apart and
can be removed on its own. A file is complete or absent: a local file is
written under a temporary name and renamed; object stores publish an object
only when it is closed.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem
from pyarrow.fs import FSSpecHandler, PyFileSystem

from backends.artifacts.fingerprint import Fingerprinter, columns_of, fingerprint_file
from backends.artifacts.reference import ArtifactRef
from backends.private_files import private_dir, seal

__all__ = ["ArtifactStore", "RunArtifacts", "TableWriter"]

#: The figway extra that brings the filesystem library of each object store.
_EXTRA_BY_PROTOCOL = {"gs": "gcs", "gcs": "gcs", "s3": "s3", "s3a": "s3"}


class ArtifactStore:
    """One artifact store, shared by the gateway and every worker."""

    def __init__(self, url: str, *, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url
        try:
            self.fs, self.root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        except ImportError as exc:
            extra = _EXTRA_BY_PROTOCOL.get(url.split("://", 1)[0], "")
            hint = f": pip install 'figway[{extra}]'" if extra else ""
            raise ValueError(f"the artifact store {url!r} needs a library{hint} ({exc})") from None
        self.root = self.root.rstrip("/")
        self.is_local = isinstance(self.fs, LocalFileSystem)
        if self.is_local:
            # 0700: every file below holds a node's whole table.
            private_dir(Path(self.root))

    @classmethod
    def from_settings(
        cls, *, url: str | None, data_dir: Path, gcs_credentials_path: Path | None = None
    ) -> ArtifactStore:
        """The store figway's settings name: ``url``, else ``data_dir/artifacts``."""
        if not url:
            return cls(str((data_dir / "artifacts").resolve()))
        options: dict[str, Any] = {}
        if url.startswith(("gs://", "gcs://")) and gcs_credentials_path is not None:
            options["token"] = str(gcs_credentials_path)
        return cls(url, storage_options=options)

    def run_path(self, job_run_id: str, *, sandboxed: bool) -> str:
        area = "shadow" if sandboxed else "runs"
        return f"{self.root}/{area}/{quote(job_run_id, safe='')}"

    def for_attempt(
        self, *, job_run_id: str, node_id: str, attempt: int, sandboxed: bool
    ) -> RunArtifacts:
        return RunArtifacts(
            self, f"{self.run_path(job_run_id, sandboxed=sandboxed)}/{node_id}/attempt-{attempt}"
        )

    def uri(self, path: str) -> str:
        return str(self.fs.unstrip_protocol(path))

    def path_of(self, reference: ArtifactRef) -> str:
        return str(self.fs._strip_protocol(reference.uri))

    def local_path(self, reference: ArtifactRef) -> Path | None:
        """The file on this machine, when the store is a local directory."""
        return Path(self.path_of(reference)) if self.is_local else None

    def open_table(self, reference: ArtifactRef) -> pq.ParquetFile:
        """A table output, for reading batch by batch (close it, or use it in ``with``).

        Raises FileNotFoundError when the file is gone (purged).
        """
        path = self.path_of(reference)
        # pre_buffer (pyarrow's default) reads the whole file ahead: memory would grow
        # with the table. Without it, one row group at a time is in memory.
        if self.is_local:
            return pq.ParquetFile(path, pre_buffer=False)
        if not self.fs.exists(path):
            raise FileNotFoundError(path)
        return pq.ParquetFile(
            path, filesystem=PyFileSystem(FSSpecHandler(self.fs)), pre_buffer=False
        )

    def read_bytes(self, uri: str) -> bytes:
        """A stored file's content (FileNotFoundError once it is purged)."""
        with self.fs.open(self.fs._strip_protocol(uri), "rb") as file:
            data: bytes = file.read()
        return data

    def purge_run(self, job_run_id: str) -> int:
        """Remove every file a run (or its shadow area) wrote; returns how many."""
        removed = 0
        for sandboxed in (False, True):
            path = self.run_path(job_run_id, sandboxed=sandboxed)
            if self.fs.exists(path):
                removed += len(self.fs.find(path))
                self.fs.rm(path, recursive=True)
        return removed


class RunArtifacts:
    """The artifact store as one node attempt sees it: its own place to write."""

    def __init__(self, store: ArtifactStore, prefix: str) -> None:
        self.store = store
        self.prefix = prefix

    def new_table(self, schema: pa.Schema, name: str = "output") -> TableWriter:
        """A writer for one table output of this attempt."""
        return TableWriter(self.store, f"{self.prefix}-{name}.parquet", schema)

    def adopt_file(self, local_file: Path, name: str = "output") -> ArtifactRef:
        """Publish a Parquet file another engine wrote (DuckDB's COPY) as a table output."""
        connection = _duckdb_connection()
        try:
            rows, fingerprint = fingerprint_file(local_file, connection)
        finally:
            connection.close()
        schema = pq.read_schema(local_file)
        path = f"{self.prefix}-{name}.parquet"
        if self.store.is_local:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(local_file, path)
            seal(path)
        else:
            self.store.fs.put_file(str(local_file), path)
        return ArtifactRef(
            uri=self.store.uri(path),
            rows=rows,
            fingerprint=fingerprint,
            columns=columns_of(schema),
            bytes=int(self.store.fs.size(path)),
        )

    def open_table(self, reference: ArtifactRef) -> pq.ParquetFile:
        return self.store.open_table(reference)

    def put_json(self, data: bytes, name: str = "output") -> str:
        """Store an output's JSON (too large for the database) as a file; its URI."""
        path = f"{self.prefix}-{name}.json"
        if self.store.is_local:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            partial = f"{path}.{uuid.uuid4().hex[:8]}.partial"
            Path(partial).write_bytes(data)
            seal(partial)
            os.replace(partial, path)
        else:
            with self.store.fs.open(path, "wb") as file:
                file.write(data)
        return self.store.uri(path)


class TableWriter:
    """Writes one table as Parquet, batch by batch, and fingerprints it on the way.

    Use it as a context manager: leaving the block with an exception removes
    the partial file. :meth:`finish` returns the reference to store as output.
    """

    def __init__(self, store: ArtifactStore, path: str, schema: pa.Schema) -> None:
        self.store = store
        self.path = path
        self.schema = schema
        unsupported = unsupported_columns(schema)
        if unsupported:
            raise TypeError(
                f"{'; '.join(unsupported)}: a table output cannot hold it; cast the column "
                "in the query (to VARCHAR, for instance)"
            )
        self._target = f"{path}.{uuid.uuid4().hex[:8]}.partial" if store.is_local else path
        if store.is_local:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._file = store.fs.open(self._target, "wb")
        try:
            self._writer = pq.ParquetWriter(self._file, schema, compression="zstd")
        except BaseException:
            self._file.close()
            self.store.fs.rm(self._target)
            raise
        self._fingerprinter = Fingerprinter(schema)
        self._closed = False
        self._finished = False

    @property
    def rows(self) -> int:
        return self._fingerprinter.rows

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.schema != self.schema:
            batch = batch.cast(self.schema)
        self._fingerprinter.add(batch)
        self._writer.write_batch(batch)

    def finish(self) -> ArtifactRef:
        fingerprint = self._fingerprinter.fingerprint()  # before closing: it hashes what is left
        self._close()
        self._finished = True
        if self.store.is_local:
            seal(self._target)
            os.replace(self._target, self.path)
        return ArtifactRef(
            uri=self.store.uri(self.path),
            rows=self._fingerprinter.rows,
            fingerprint=fingerprint,
            columns=columns_of(self.schema),
            bytes=int(self.store.fs.size(self.path)),
        )

    def abort(self) -> None:
        self._close()
        if self.store.fs.exists(self._target):
            self.store.fs.rm(self._target)

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._writer.close()
            self._file.close()
            self._fingerprinter.close()

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._finished:  # an error, or a writer left without finish(): no output
            self.abort()


def unsupported_columns(schema: pa.Schema) -> list[str]:
    """Columns whose type Parquet or the fingerprint cannot take, each described.

    >>> unsupported_columns(pa.schema([("gap", pa.month_day_nano_interval())]))
    ["column 'gap' is month_day_nano_interval"]
    """
    return [
        f"column {field.name!r} is {field.type}" for field in schema if not _storable(field.type)
    ]


def _storable(kind: pa.DataType) -> bool:
    # Parquet has no month-day-nano interval; DuckDB (the fingerprint) no decimal256.
    if pa.types.is_interval(kind) or pa.types.is_decimal256(kind):
        return False
    if pa.types.is_struct(kind):
        return kind.num_fields > 0 and all(_storable(f.type) for f in kind)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _storable(kind.value_type)
    return True


def _duckdb_connection() -> Any:
    import duckdb

    return duckdb.connect(config={"threads": 1})
