"""Node outputs as tables: Parquet files in an artifact store, passed downstream by reference.

A node that produces rows writes them through :class:`TableWriter`; what the
database (and so the downstream node) gets is an :class:`ArtifactRef`: where
the file is, its columns, and its fingerprint. Rows never travel through
Redis or the Prefect API.
"""

from backends.artifacts.fingerprint import Fingerprinter, fingerprint_file
from backends.artifacts.reference import ArtifactRef, comparable_output
from backends.artifacts.store import ArtifactStore, RunArtifacts, TableWriter

__all__ = [
    "ArtifactRef",
    "ArtifactStore",
    "Fingerprinter",
    "RunArtifacts",
    "TableWriter",
    "comparable_output",
    "fingerprint_file",
]
