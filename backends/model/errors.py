"""Every exception figway raises on purpose, in one tree.

Nothing from redis, rq, Prefect, SQLAlchemy or a database driver leaves
``backends/``: each boundary translates its library's errors into one of these
with ``raise ... from exc``. The web layer maps them to HTTP answers
(``gateway/web/errors.py``); the CLI prints them as messages.

    FigwayError
    ├── BackendError                 a backend could not do what was asked
    │   ├── BackendUnavailableError  it cannot be reached right now (retry later)
    │   └── BackendRejectedError     it refused the request (retrying will not help)
    ├── DefinitionError              a workflow definition is invalid (carries every problem)
    │   └── DefinitionTooLargeError  it is larger than the operator allows (HTTP 413)
    ├── RulesInvalidError            a routing rules file was refused (every problem, by line)
    ├── NotFoundError                what was asked for does not exist (HTTP 404)
    │   ├── WorkflowNotFoundError
    │   └── RunNotFoundError
    ├── RunConflictError             the request contradicts the run's recorded state (409)
    ├── RolloutConflictError         a rollout cannot do what was asked in its state (409)
    ├── SubmitFailedError            the run is recorded, its backend could not take it (503)
    ├── AccessDeniedError            no key, an unknown or revoked one, the wrong scope, too fast
    ├── SecretMissingError           a node asked for a secret no source holds
    ├── SecretRefusedError           a secret's policy does not allow this use of it
    ├── NodeError                    raised inside a worker about one node attempt
    │   ├── NodeFailedError          a node type failed its attempt (a message for people)
    │   ├── NodeCancelledError       a node stopped because its run was killed
    │   └── NodeAttemptFailedError   tells the backend the attempt failed (it may retry)
    └── StoreError                   the database could not do what was asked
        ├── StoreUnavailableError    it cannot be reached right now (retry later)
        └── DatabaseNotMigratedError the schema is behind the code (``figway db upgrade``)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "AccessDeniedError",
    "BackendError",
    "BackendRejectedError",
    "BackendUnavailableError",
    "DatabaseNotMigratedError",
    "DefinitionError",
    "DefinitionProblem",
    "DefinitionTooLargeError",
    "FigwayError",
    "NodeAttemptFailedError",
    "NodeCancelledError",
    "NodeError",
    "NodeFailedError",
    "NotFoundError",
    "RolloutConflictError",
    "RulesInvalidError",
    "RulesProblem",
    "RunConflictError",
    "RunNotFoundError",
    "SecretMissingError",
    "SecretRefusedError",
    "StoreError",
    "StoreUnavailableError",
    "SubmitFailedError",
    "WorkflowNotFoundError",
]


class FigwayError(Exception):
    """The root of every error figway raises on purpose."""


class BackendError(FigwayError):
    """A backend could not do what was asked."""

    def __init__(self, backend: str, message: str) -> None:
        super().__init__(f"{backend}: {message}")
        self.backend = backend
        self.message = message


class BackendUnavailableError(BackendError):
    """The backend cannot be reached; the same request may succeed later.

    ``may_have_started`` is False only when the request certainly never reached
    the backend (the connection was refused): only then may the run be sent to
    another backend without risk of running on both.
    """

    def __init__(self, backend: str, message: str, *, may_have_started: bool = True) -> None:
        super().__init__(backend, message)
        self.may_have_started = may_have_started


class BackendRejectedError(BackendError):
    """The backend refused the request; sending it again will not help."""


@dataclass(frozen=True)
class DefinitionProblem:
    """One thing wrong with a workflow definition.

    ``location`` names where, as a path into the definition
    (``nodes.extract.config.seconds``, ``dependencies.load``).

    >>> str(DefinitionProblem("nodes.a.type", "unknown node type 'x'"))
    "nodes.a.type: unknown node type 'x'"
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


class DefinitionTooLargeError(DefinitionError):
    """A definition larger than the operator allows: its size, not its content, is wrong."""


@dataclass(frozen=True)
class RulesProblem:
    """One thing wrong with a routing rules file, with its line when it has one.

    >>> str(RulesProblem(4, "rules[0] (a).percent", "too big"))
    'line 4: rules[0] (a).percent: too big'
    """

    line: int | None  # 1-based; None when the problem is not tied to a line
    field: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.field}: {self.message}"


class RulesInvalidError(FigwayError):
    """The rules file has problems; nothing of it took effect."""

    def __init__(
        self, source: str, problems: Sequence[RulesProblem], *, version: str | None = None
    ) -> None:
        self.source = source
        self.problems = tuple(problems)
        self.version = version  # of the refused content; None when it could not be read
        listing = "\n".join(f"  {problem}" for problem in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s), nothing applied:\n{listing}")


class NotFoundError(FigwayError):
    """What was asked for does not exist (the API answers 404)."""


class WorkflowNotFoundError(NotFoundError):
    """No workflow is defined under that id."""


class RunNotFoundError(NotFoundError):
    """No run is recorded under that id."""


class RunConflictError(FigwayError):
    """The request contradicts the run's recorded state (already finished, other workflow)."""


class RolloutConflictError(FigwayError):
    """A rollout cannot do what was asked in its current state (pause a paused one, pin at
    a percentage that is not one of its steps, move one another gateway just moved)."""


class SubmitFailedError(FigwayError):
    """The run is recorded but its backend could not take it; repeat the request to retry."""

    def __init__(self, job_run_id: str, backend: str, reason: str) -> None:
        super().__init__(
            f"run {job_run_id!r} is recorded but backend {backend!r} could not take it: {reason}. "
            "Send the same request again (same job_run_id) to retry."
        )
        self.job_run_id = job_run_id


class AccessDeniedError(FigwayError):
    """A request without a valid key (401), without the scope (403), or too fast (429)."""

    def __init__(self, code: int, detail: str, *, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.retry_after = retry_after


class SecretMissingError(FigwayError):
    """A node asked for a secret no source holds."""


class SecretRefusedError(FigwayError):
    """A secret's policy does not allow this workspace, use or destination."""


class NodeError(FigwayError):
    """Raised inside a worker about one attempt of one node."""


class NodeFailedError(NodeError):
    """Raised by a node to fail its attempt with a message meant for people."""


class NodeCancelledError(NodeError):
    """Raised by a node that stopped because its run was killed."""


class NodeAttemptFailedError(NodeError):
    """Raised by a backend's job or task so the backend records the attempt as failed
    (and retries it when attempts are left); the runtime has already recorded why."""


class StoreError(FigwayError):
    """The database could not do what was asked."""


class StoreUnavailableError(StoreError):
    """The database cannot be reached right now (down, restarting, the link cut): retry later."""


class DatabaseNotMigratedError(StoreError):
    """The database schema is older than this code; run ``figway db upgrade``."""
