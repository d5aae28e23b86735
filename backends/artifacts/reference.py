"""What a table output looks like in the database: a reference, never the rows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ArtifactRef", "comparable_output"]

#: The key a node output holds its reference under: ``{"artifact": {...}}``.
ARTIFACT_KEY = "artifact"


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
