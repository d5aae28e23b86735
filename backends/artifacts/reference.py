"""What a table output looks like in the database: a reference, never the rows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

__all__ = [
    "STORED_OUTPUT_KEY",
    "ArtifactRef",
    "comparable_output",
    "store_relative",
    "stored_output_of",
]

#: The key a node output holds its reference under: ``{"artifact": {...}}``.
ARTIFACT_KEY = "artifact"
#: The key of an output too large for the database, kept as a JSON file in the store:
#: ``{"stored_output": {"uri", "bytes", "sha256"}}``.
STORED_OUTPUT_KEY = "stored_output"


def stored_output_of(output: Any) -> Mapping[str, Any] | None:
    """The reference a stored node output holds to its JSON file, or None."""
    if isinstance(output, Mapping) and set(output) == {STORED_OUTPUT_KEY}:
        body = output[STORED_OUTPUT_KEY]
        if isinstance(body, Mapping) and isinstance(body.get("uri"), str):
            return body
    return None


@dataclass(frozen=True)
class ArtifactRef:
    """One table output: where it is, what it holds, and its fingerprint.

    ``fingerprint`` is equal for equal tables whatever their row order or file
    layout (see :mod:`backends.artifacts.fingerprint`), so it is what the shadow
    comparison and the parity tests compare, never the ``uri``.
    """

    uri: str
    rows: int
    fingerprint: str
    columns: tuple[tuple[str, str], ...]  # (name, Arrow type)
    bytes: int

    def to_output(self) -> dict[str, Any]:
        """The node output stored for this table (JSON)."""
        return {
            ARTIFACT_KEY: {
                "uri": self.uri,
                "rows": self.rows,
                "fingerprint": self.fingerprint,
                "columns": [{"name": name, "type": kind} for name, kind in self.columns],
                "bytes": self.bytes,
            }
        }

    @classmethod
    def from_output(cls, output: Any) -> ArtifactRef | None:
        """The reference a stored node output holds, or None when it is plain JSON."""
        if not isinstance(output, Mapping) or not isinstance(output.get(ARTIFACT_KEY), Mapping):
            return None
        body = output[ARTIFACT_KEY]
        try:
            return cls(
                uri=str(body["uri"]),
                rows=int(body["rows"]),
                fingerprint=str(body["fingerprint"]),
                columns=tuple((str(c["name"]), str(c["type"])) for c in body["columns"]),
                bytes=int(body.get("bytes", 0)),
            )
        except (KeyError, TypeError, ValueError):
            return None


def comparable_output(output: Any) -> Any:
    """A node output with its table (if any) reduced to what two equal tables share.

    Two runs of one workflow write their tables to different places; what must
    match is the row count, the columns and the fingerprint.

    >>> a = ArtifactRef("file:///a/run-1/x.parquet", 2, "f00d", (("id", "int64"),), 10)
    >>> b = ArtifactRef("file:///a/run-2/x.parquet", 2, "f00d", (("id", "int64"),), 12)
    >>> comparable_output(a.to_output()) == comparable_output(b.to_output())
    True
    """
    stored = stored_output_of(output)
    if stored is not None:  # the same JSON is the same hash, wherever the file is
        return {STORED_OUTPUT_KEY: {"sha256": stored.get("sha256"), "bytes": stored.get("bytes")}}
    reference = ArtifactRef.from_output(output)
    if reference is None:
        return output
    return {
        ARTIFACT_KEY: {
            "rows": reference.rows,
            "fingerprint": reference.fingerprint,
            "columns": [list(column) for column in reference.columns],
        }
    }


def store_relative(output: Any, job_run_id: str) -> Any:
    """A node output whose table reference names its file relative to the artifact store,
    as API answers show it: where the store is (a server path, a bucket) is the
    operator's business, not the client's.

    >>> ref = ArtifactRef("file:///srv/figway/artifacts/runs/r-1/x/attempt-1-output.parquet",
    ...                   2, "f00d", (("id", "int64"),), 10)
    >>> store_relative(ref.to_output(), "r-1")["artifact"]["uri"]
    'runs/r-1/x/attempt-1-output.parquet'
    >>> store_relative({"plain": 1}, "r-1")
    {'plain': 1}
    """
    stored = stored_output_of(output)
    reference = ArtifactRef.from_output(output)
    if reference is not None:
        key, uri = ARTIFACT_KEY, reference.uri
    elif stored is not None:
        key, uri = STORED_OUTPUT_KEY, str(stored["uri"])
    else:
        return output
    run = quote(job_run_id, safe="")
    relative = uri.rsplit("/", 1)[-1]
    for area in ("runs", "shadow"):  # ArtifactStore.run_path's layout
        at = uri.rfind(f"/{area}/{run}/")
        if at != -1:
            relative = uri[at + 1 :]
            break
    return {**output, key: {**output[key], "uri": relative}}
