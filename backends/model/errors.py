"""The exceptions figway's backends raise. Nothing from redis, rq or Prefect
leaves ``backends/``: each backend translates its library's errors here, at
its boundary, with ``raise ... from exc``.

    FigwayError
    ├── BackendError
    │   ├── BackendUnavailable   the backend cannot be reached right now (retry later)
    │   ├── BackendRejected      the backend refused the request (retrying will not help)
    │   └── RunNotFound          the backend knows no such run
    ├── DefinitionError          a workflow definition is invalid (carries every problem)
    └── StoreError
        └── DatabaseNotMigrated  the database schema is behind the code
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "BackendError",
    "BackendRejected",
    "BackendUnavailable",
    "DatabaseNotMigrated",
    "DefinitionError",
    "DefinitionProblem",
    "FigwayError",
    "RunNotFound",
    "StoreError",
]


class FigwayError(Exception):
    """The root of every error figway raises on purpose."""


class BackendError(FigwayError):
    """A backend could not do what was asked."""

    def __init__(self, backend: str, message: str) -> None:
        super().__init__(f"{backend}: {message}")
        self.backend = backend
        self.message = message


class BackendUnavailable(BackendError):
    """The backend cannot be reached; the same request may succeed later.

    ``may_have_started`` is False only when the request certainly never reached
    the backend (the connection was refused): only then may the run be sent to
    another backend without risk of running on both.
    """

    def __init__(self, backend: str, message: str, *, may_have_started: bool = True) -> None:
        super().__init__(backend, message)
        self.may_have_started = may_have_started


class BackendRejected(BackendError):
    """The backend refused the request; sending it again will not help."""


class RunNotFound(BackendError):
    """The backend has no record of the run."""


@dataclass(frozen=True)
class DefinitionProblem:
    """One thing wrong with a workflow definition.

    ``location`` names where, as a path into the definition
    (``nodes.extract.config.seconds``, ``dependencies.load``).
    """

    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class DefinitionError(FigwayError):
    """A workflow definition was refused; ``problems`` lists every reason."""

    def __init__(self, problems: Sequence[DefinitionProblem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


class StoreError(FigwayError):
    """The database could not do what was asked."""


class DatabaseNotMigrated(StoreError):
    """The database schema is older than this code; run ``figway db upgrade``."""
