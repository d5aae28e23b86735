"""The artifact store: tables written, fingerprinted, read back, referenced and purged.

Every store test runs twice: on a local directory, and on fsspec's in-memory
filesystem, which takes the object-storage path (no temporary name and rename,
``put_file`` to publish, URIs with their protocol).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backends.artifacts import (
    ArtifactRef,
    ArtifactStore,
    Fingerprinter,
    comparable_output,
    fingerprint_file,
)
from backends.artifacts.reference import store_relative

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("amount", pa.float64())])
ROWS: list[dict[str, Any]] = [
    {"id": i, "name": f"customer {i}", "amount": i * 1.25} for i in range(1, 11)
] + [{"id": 11, "name": None, "amount": None}]


@pytest.fixture(params=["local", "memory"])
def artifact_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    """An empty store: a local directory, or a bucket-like in-memory filesystem."""
    if request.param == "local":
        yield ArtifactStore(str(tmp_path / "artifacts"))
        return
    store = ArtifactStore(f"memory://figway-test-{uuid.uuid4().hex}")
    yield store
    if store.fs.exists(store.root):  # the memory filesystem is process-wide
        store.fs.rm(store.root, recursive=True)


def stored_files(store: ArtifactStore) -> list[str]:
    """Every file in the store, relative to its root."""
    if not store.fs.exists(store.root):
        return []
    return sorted(path.removeprefix(store.root + "/") for path in store.fs.find(store.root))


def batches(
    rows: list[dict[str, Any]], schema: pa.Schema, size: int | None
) -> list[pa.RecordBatch]:
    size = size or max(len(rows), 1)
    return [
        pa.RecordBatch.from_pylist(rows[start : start + size], schema=schema)
        for start in range(0, len(rows), size)
    ]


def write_table(
    store: ArtifactStore,
    rows: list[dict[str, Any]],
    *,
    schema: pa.Schema = SCHEMA,
    batch_size: int | None = None,
    job_run_id: str = "run-1",
    node_id: str = "extract",
    attempt: int = 1,
    sandboxed: bool = False,
) -> ArtifactRef:
    artifacts = store.for_attempt(
        job_run_id=job_run_id, node_id=node_id, attempt=attempt, sandboxed=sandboxed
    )
    with artifacts.new_table(schema) as writer:
        for batch in batches(rows, schema, batch_size):
            writer.write(batch)
        return writer.finish()


def read_rows(store: ArtifactStore, reference: ArtifactRef) -> list[dict[str, Any]]:
    table_file = store.open_table(reference)
    try:
        return table_file.read().to_pylist()
    finally:
        table_file.close(force=True)  # open_table's handle is not pyarrow's to close


def fingerprint(store: ArtifactStore, rows: list[dict[str, Any]], **options: Any) -> str:
    return write_table(store, rows, **options).fingerprint


# -- writing and reading back ----------------------------------------------------------


def test_a_table_written_in_batches_reads_back_whole(artifact_store: ArtifactStore) -> None:
    reference = write_table(artifact_store, ROWS, batch_size=3)
    assert reference.rows == len(ROWS)
    assert reference.columns == (("id", "int64"), ("name", "string"), ("amount", "double"))
    assert read_rows(artifact_store, reference) == ROWS
    assert reference.bytes == artifact_store.fs.size(artifact_store.path_of(reference)) > 0
    assert stored_files(artifact_store) == ["runs/run-1/extract/attempt-1-output.parquet"]


def test_the_uri_carries_the_store_protocol(artifact_store: ArtifactStore) -> None:
    reference = write_table(artifact_store, ROWS)
    protocol = "file://" if artifact_store.is_local else "memory://"
    assert reference.uri.startswith(protocol)
    assert reference.uri.endswith("/runs/run-1/extract/attempt-1-output.parquet")
    assert artifact_store.path_of(reference) == (
        f"{artifact_store.root}/runs/run-1/extract/attempt-1-output.parquet"
    )


def test_only_a_local_store_gives_a_local_path(artifact_store: ArtifactStore) -> None:
    reference = write_table(artifact_store, ROWS)
    path = artifact_store.local_path(reference)
    if artifact_store.is_local:
        assert path is not None
        assert pq.read_table(path).to_pylist() == ROWS
    else:
        assert path is None


def test_a_batch_of_a_compatible_type_is_cast_to_the_writer_schema(
    artifact_store: ArtifactStore,
) -> None:
    narrow = pa.schema([("id", pa.int32()), ("name", pa.string()), ("amount", pa.float64())])
    artifacts = artifact_store.for_attempt(
        job_run_id="run-1", node_id="cast", attempt=1, sandboxed=False
    )
    with artifacts.new_table(SCHEMA) as writer:
        writer.write(pa.RecordBatch.from_pylist(ROWS, schema=narrow))
        cast = writer.finish()
    assert cast.columns[0] == ("id", "int64")
    assert cast.fingerprint == fingerprint(artifact_store, ROWS)
    assert read_rows(artifact_store, cast) == ROWS


def test_an_empty_table_is_a_table(artifact_store: ArtifactStore) -> None:
    nothing = write_table(artifact_store, [])
    assert nothing.rows == 0
    table_file = artifact_store.open_table(nothing)
    try:
        table = table_file.read()
    finally:
        table_file.close(force=True)
    assert table.num_rows == 0
    assert table.schema.names == ["id", "name", "amount"]
    assert nothing.fingerprint == fingerprint(artifact_store, [], job_run_id="run-2")
    assert nothing.fingerprint != fingerprint(artifact_store, ROWS[:1])
    other_columns = pa.schema([("id", pa.int64())])
    assert nothing.fingerprint != fingerprint(artifact_store, [], schema=other_columns)


def test_an_empty_batch_changes_nothing(artifact_store: ArtifactStore) -> None:
    artifacts = artifact_store.for_attempt(
        job_run_id="run-1", node_id="gaps", attempt=1, sandboxed=False
    )
    with artifacts.new_table(SCHEMA) as writer:
        writer.write(pa.RecordBatch.from_pylist([], schema=SCHEMA))
        writer.write(pa.RecordBatch.from_pylist(ROWS, schema=SCHEMA))
        writer.write(pa.RecordBatch.from_pylist([], schema=SCHEMA))
        with_gaps = writer.finish()
    assert with_gaps.rows == len(ROWS)
    assert with_gaps.fingerprint == fingerprint(artifact_store, ROWS)


def test_leaving_the_block_with_an_error_leaves_nothing(artifact_store: ArtifactStore) -> None:
    artifacts = artifact_store.for_attempt(
        job_run_id="run-1", node_id="extract", attempt=1, sandboxed=False
    )

    def extract_that_fails_midway() -> None:
        with artifacts.new_table(SCHEMA) as writer:
            writer.write(pa.RecordBatch.from_pylist(ROWS, schema=SCHEMA))
            raise RuntimeError("source went away")

    with pytest.raises(RuntimeError, match="source went away"):
        extract_that_fails_midway()
    assert stored_files(artifact_store) == []


def test_a_writer_left_without_finish_leaves_nothing(artifact_store: ArtifactStore) -> None:
    artifacts = artifact_store.for_attempt(
        job_run_id="run-1", node_id="extract", attempt=1, sandboxed=False
    )
    with artifacts.new_table(SCHEMA) as writer:
        writer.write(pa.RecordBatch.from_pylist(ROWS, schema=SCHEMA))
    assert writer.rows == len(ROWS)
    assert stored_files(artifact_store) == []


def test_a_local_table_appears_only_once_finished(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    artifacts = store.for_attempt(job_run_id="run-1", node_id="n", attempt=1, sandboxed=False)
    with artifacts.new_table(SCHEMA) as writer:
        writer.write(pa.RecordBatch.from_pylist(ROWS, schema=SCHEMA))
        assert not Path(writer.path).exists()  # readers never see a half-written file
        reference = writer.finish()
    assert Path(writer.path).exists()
    assert stored_files(store) == ["runs/run-1/n/attempt-1-output.parquet"]  # no .partial
    assert store.local_path(reference) == Path(writer.path)


def test_leaving_an_opened_table_closes_its_file(artifact_store: ArtifactStore) -> None:
    # A load reads its input through open_table; the file must not stay open after it.
    reference = write_table(artifact_store, ROWS)
    with artifact_store.open_table(reference) as table_file:
        assert table_file.read().num_rows == len(ROWS)
    closed = table_file.closed
    table_file.close(force=True)
    assert closed, "the file open_table opened is still open after the with block"


# -- fingerprints ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "batch_size"),
    [
        pytest.param(list(reversed(ROWS)), None, id="reversed"),
        pytest.param(ROWS[5:] + ROWS[:5], 4, id="rotated, batches of 4"),
        pytest.param(ROWS, 1, id="one row per batch"),
        pytest.param(ROWS, None, id="one batch"),
    ],
)
def test_the_same_rows_have_the_same_fingerprint(
    artifact_store: ArtifactStore, rows: list[dict[str, Any]], batch_size: int | None
) -> None:
    baseline = fingerprint(artifact_store, ROWS, batch_size=3, job_run_id="baseline")
    assert fingerprint(artifact_store, rows, batch_size=batch_size) == baseline


def _changed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**row, "amount": 99.0} if row["id"] == 4 else row for row in rows]


def _renamed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"id": r["id"], "customer": r["name"], "amount": r["amount"]} for r in rows]


_RENAMED = pa.schema([("id", pa.int64()), ("customer", pa.string()), ("amount", pa.float64())])
_NARROWER = pa.schema([("id", pa.int32()), ("name", pa.string()), ("amount", pa.float64())])


@pytest.mark.parametrize(
    ("rows", "schema"),
    [
        pytest.param(_changed(ROWS), SCHEMA, id="one value changed"),
        pytest.param([*ROWS, ROWS[3]], SCHEMA, id="a row duplicated"),
        pytest.param(ROWS[:-1], SCHEMA, id="a row missing"),
        pytest.param(
            [{**r, "name": None} if r["id"] == 2 else r for r in ROWS], SCHEMA, id="a null"
        ),
        pytest.param(_renamed(ROWS), _RENAMED, id="a column renamed"),
        pytest.param(ROWS, _NARROWER, id="a column type changed"),
    ],
)
def test_a_different_table_has_a_different_fingerprint(
    artifact_store: ArtifactStore, rows: list[dict[str, Any]], schema: pa.Schema
) -> None:
    baseline = fingerprint(artifact_store, ROWS, job_run_id="baseline")
    assert fingerprint(artifact_store, rows, schema=schema) != baseline


def test_repeated_rows_count_unlike_an_exclusive_or(artifact_store: ArtifactStore) -> None:
    # Same row count, and an XOR of row hashes would make both zero.
    a, b = ROWS[0], ROWS[1]
    assert fingerprint(artifact_store, [a, a], job_run_id="r1") != fingerprint(
        artifact_store, [b, b], job_run_id="r2"
    )
    assert fingerprint(artifact_store, [a, a, b], job_run_id="r3") != fingerprint(
        artifact_store, [a, b, b], job_run_id="r4"
    )


def test_both_stores_agree_on_a_fingerprint(tmp_path: Path) -> None:
    local = ArtifactStore(str(tmp_path / "artifacts"))
    remote = ArtifactStore(f"memory://figway-test-{uuid.uuid4().hex}")
    try:
        assert fingerprint(local, ROWS) == fingerprint(remote, ROWS, batch_size=2)
    finally:
        remote.fs.rm(remote.root, recursive=True)


def test_the_fingerprinter_matches_what_the_writer_records(
    artifact_store: ArtifactStore,
) -> None:
    fingerprinter = Fingerprinter(SCHEMA)
    try:
        for batch in batches(ROWS, SCHEMA, 5):
            fingerprinter.add(batch)
        assert fingerprinter.rows == len(ROWS)
        assert fingerprinter.fingerprint() == fingerprint(artifact_store, ROWS)
    finally:
        fingerprinter.close()


def test_a_written_file_fingerprints_as_its_writer_said(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    reference = write_table(store, ROWS, batch_size=4)
    path = store.local_path(reference)
    assert path is not None
    connection = duckdb.connect()
    try:
        assert fingerprint_file(path, connection) == (len(ROWS), reference.fingerprint)
    finally:
        connection.close()


def test_a_list_column_fingerprints_the_same_from_the_writer_and_from_its_file(
    tmp_path: Path,
) -> None:
    # Parquet names a list's element `element`, Arrow `item`: one table, one fingerprint.
    schema = pa.schema([("id", pa.int64()), ("tags", pa.list_(pa.string()))])
    rows = [{"id": 1, "tags": ["a", "b"]}, {"id": 2, "tags": []}, {"id": 3, "tags": None}]
    store = ArtifactStore(str(tmp_path / "artifacts"))
    written = write_table(store, rows, schema=schema)
    path = store.local_path(written)
    assert path is not None
    connection = duckdb.connect()
    try:
        assert fingerprint_file(path, connection) == (3, written.fingerprint)
    finally:
        connection.close()


# -- adopting a file another engine wrote ----------------------------------------------


def test_an_adopted_file_has_the_fingerprint_a_writer_gives(
    artifact_store: ArtifactStore, tmp_path: Path
) -> None:
    engine_file = tmp_path / "duckdb-copy.parquet"
    # Another order and several row groups: only the rows and columns count.
    pq.write_table(
        pa.Table.from_pylist(list(reversed(ROWS)), schema=SCHEMA), engine_file, row_group_size=3
    )
    artifacts = artifact_store.for_attempt(
        job_run_id="run-1", node_id="transform", attempt=2, sandboxed=False
    )
    adopted = artifacts.adopt_file(engine_file)
    written = write_table(artifact_store, ROWS, job_run_id="run-2")
    assert adopted.fingerprint == written.fingerprint
    assert (adopted.rows, adopted.columns) == (written.rows, written.columns)
    assert adopted.uri.endswith("/runs/run-1/transform/attempt-2-output.parquet")
    assert adopted.bytes == artifact_store.fs.size(artifact_store.path_of(adopted)) > 0
    assert sorted(read_rows(artifact_store, adopted), key=lambda r: r["id"]) == ROWS


# -- references ------------------------------------------------------------------------

_REFERENCE = ArtifactRef(
    uri="file:///data/artifacts/runs/run-1/extract/attempt-1-output.parquet",
    rows=11,
    fingerprint="0123456789abcdef0123456789abcdef",
    columns=(("id", "int64"), ("name", "string")),
    bytes=1234,
)


def test_a_reference_survives_its_output_as_json() -> None:
    output = json.loads(json.dumps(_REFERENCE.to_output()))
    assert output["artifact"]["columns"] == [
        {"name": "id", "type": "int64"},
        {"name": "name", "type": "string"},
    ]
    assert ArtifactRef.from_output(output) == _REFERENCE


def test_a_written_reference_survives_its_output(artifact_store: ArtifactStore) -> None:
    reference = write_table(artifact_store, ROWS)
    assert ArtifactRef.from_output(json.loads(json.dumps(reference.to_output()))) == reference


@pytest.mark.parametrize(
    "output",
    [
        None,
        42,
        "artifact",
        [_REFERENCE.to_output()],
        {"rows": 11},
        {"artifact": "file:///x.parquet"},
        {"artifact": {"uri": "file:///x.parquet", "rows": 1}},  # no fingerprint, no columns
        {"artifact": {**_REFERENCE.to_output()["artifact"], "rows": "many"}},
        {"artifact": {**_REFERENCE.to_output()["artifact"], "columns": [{"name": "id"}]}},
    ],
)
def test_an_output_that_is_not_a_table_has_no_reference(output: Any) -> None:
    assert ArtifactRef.from_output(output) is None


def test_comparable_outputs_ignore_where_a_table_is_and_its_size() -> None:
    elsewhere = ArtifactRef(
        uri="memory:///bucket/shadow/run-9/extract/attempt-3-output.parquet",
        rows=_REFERENCE.rows,
        fingerprint=_REFERENCE.fingerprint,
        columns=_REFERENCE.columns,
        bytes=99,
    )
    assert comparable_output(elsewhere.to_output()) == comparable_output(_REFERENCE.to_output())


@pytest.mark.parametrize(
    "change",
    [
        {"fingerprint": "ffffffffffffffffffffffffffffffff"},
        {"rows": 12},
        {"columns": (("id", "int64"), ("name", "large_string"))},
    ],
    ids=["fingerprint", "rows", "columns"],
)
def test_comparable_outputs_differ_when_the_tables_do(change: dict[str, Any]) -> None:
    other = dataclasses.replace(_REFERENCE, **change)
    assert comparable_output(other.to_output()) != comparable_output(_REFERENCE.to_output())


def test_a_plain_output_is_compared_as_it_is() -> None:
    assert comparable_output({"rows": 3, "status": 200}) == {"rows": 3, "status": 200}
    assert comparable_output(None) is None


# -- runs, shadows and purging ---------------------------------------------------------


def test_a_shadow_attempt_writes_under_shadow(artifact_store: ArtifactStore) -> None:
    reference = write_table(artifact_store, ROWS, sandboxed=True, attempt=2)
    assert stored_files(artifact_store) == ["shadow/run-1/extract/attempt-2-output.parquet"]
    assert "/shadow/run-1/" in reference.uri
    assert read_rows(artifact_store, reference) == ROWS


def test_a_run_id_cannot_reach_outside_its_run_directory(artifact_store: ArtifactStore) -> None:
    write_table(artifact_store, ROWS[:1], job_run_id="../escape/x")
    (only,) = stored_files(artifact_store)
    assert only.startswith("runs/..%2Fescape%2Fx/")


def test_purging_a_run_removes_its_runs_and_shadow_areas_only(
    artifact_store: ArtifactStore,
) -> None:
    write_table(artifact_store, ROWS, job_run_id="run-1", node_id="extract")
    write_table(artifact_store, ROWS, job_run_id="run-1", node_id="transform", attempt=2)
    write_table(artifact_store, ROWS, job_run_id="run-1", node_id="extract", sandboxed=True)
    kept = [
        write_table(artifact_store, ROWS, job_run_id="run-10"),  # a longer id, same prefix
        write_table(artifact_store, ROWS, job_run_id="run-2", sandboxed=True),
        write_table(artifact_store, ROWS, job_run_id="run-2"),
    ]

    assert artifact_store.purge_run("run-1") == 3

    assert stored_files(artifact_store) == [
        "runs/run-10/extract/attempt-1-output.parquet",
        "runs/run-2/extract/attempt-1-output.parquet",
        "shadow/run-2/extract/attempt-1-output.parquet",
    ]
    for reference in kept:
        assert read_rows(artifact_store, reference) == ROWS
    assert artifact_store.purge_run("run-1") == 0


def test_a_purged_table_cannot_be_opened(artifact_store: ArtifactStore) -> None:
    reference = write_table(artifact_store, ROWS)
    assert artifact_store.purge_run("run-1") == 1
    with pytest.raises(FileNotFoundError):
        artifact_store.open_table(reference)


# -- settings --------------------------------------------------------------------------


@pytest.mark.parametrize("url", [None, ""])
def test_without_a_url_the_store_is_the_data_dir_artifacts(tmp_path: Path, url: str | None) -> None:
    store = ArtifactStore.from_settings(url=url, data_dir=tmp_path / "data")
    assert store.is_local
    assert Path(store.root) == (tmp_path / "data" / "artifacts").resolve()
    assert Path(store.root).is_dir()


def test_a_url_names_the_store() -> None:
    name = f"figway-test-{uuid.uuid4().hex}"
    store = ArtifactStore.from_settings(url=f"memory://{name}/figway", data_dir=Path("unused"))
    assert not store.is_local
    assert store.root == f"/{name}/figway"
    assert not Path("unused").exists()


@pytest.mark.parametrize(
    ("url", "module", "extra"),
    [("gs://figway-bucket/artifacts", "gcsfs", "gcs"), ("s3://figway-bucket/x", "s3fs", "s3")],
    ids=["gcs", "s3"],
)
def test_a_bucket_without_its_extra_names_the_extra_to_install(
    tmp_path: Path, url: str, module: str, extra: str
) -> None:
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed")
    with pytest.raises(ValueError, match=rf"pip install 'figway\[{extra}\]'"):
        ArtifactStore.from_settings(url=url, data_dir=tmp_path)


def test_a_local_store_and_its_files_are_private(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "new" / "artifacts"))
    assert (tmp_path / "new" / "artifacts").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700
    schema = pa.schema([("id", pa.int64())])
    attempt = store.for_attempt(job_run_id="run-1", node_id="n", attempt=1, sandboxed=False)
    with attempt.new_table(schema) as writer:
        writer.write(pa.record_batch([pa.array([1, 2])], schema=schema))
        reference = writer.finish()
    local = store.local_path(reference)
    assert local is not None
    assert local.stat().st_mode & 0o777 == 0o600


def test_the_api_shows_an_artifact_relative_to_the_store() -> None:
    reference = ArtifactRef(
        "file:///srv/figway/artifacts/runs/r%2F1/n/attempt-1-output.parquet",
        2,
        "f00d",
        (("id", "int64"),),
        10,
    )
    shown = store_relative(reference.to_output(), "r/1")["artifact"]
    assert shown["uri"] == "runs/r%2F1/n/attempt-1-output.parquet"
    assert shown["fingerprint"] == "f00d"


def test_a_stored_output_is_shown_relative_and_compared_by_its_hash() -> None:
    def stored(uri: str) -> dict[str, Any]:
        return {"stored_output": {"uri": uri, "bytes": 300_000, "sha256": "ab12"}}

    one = stored("file:///srv/a/runs/r-1/big/attempt-1-output.json")
    other = stored("file:///srv/a/shadow/r-1~shadow/big/attempt-1-output.json")
    assert (
        store_relative(one, "r-1")["stored_output"]["uri"] == "runs/r-1/big/attempt-1-output.json"
    )
    assert comparable_output(one) == comparable_output(other)
