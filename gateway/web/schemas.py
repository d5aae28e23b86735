"""Request and response bodies of the HTTP API, as existing clients know them."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import Path
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from backends.artifacts.reference import store_relative
from backends.model.ids import PRINTABLE_PATTERN, PrintableId, printable
from backends.model.workflow import non_finite_number_at
from backends.store import RunView

__all__ = [
    "LogLineOut",
    "LogsOut",
    "NodeOut",
    "RunIdPath",
    "RunIn",
    "RunOut",
    "StatsOut",
    "TicketOut",
    "WorkflowIdPath",
    "WorkflowOut",
]

#: An id in a URL path: printable text, refused naming the parameter otherwise (422).
RunIdPath = Annotated[
    PrintableId,
    Path(description="The run's job_run_id.", json_schema_extra={"pattern": PRINTABLE_PATTERN}),
]
WorkflowIdPath = Annotated[
    PrintableId,
    Path(description="The workflow's id.", json_schema_extra={"pattern": PRINTABLE_PATTERN}),
]
#: An optional id in a body (``from_job``): printable text, possibly empty.
_OptionalText = Annotated[
    str,
    Field(max_length=128, json_schema_extra={"pattern": PRINTABLE_PATTERN}),
    AfterValidator(printable),
]
_JOB_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]*")


class RunIn(BaseModel):
    """``POST /workflow_runs/``. Unknown fields are ignored, as the legacy API did."""

    model_config = ConfigDict(extra="ignore")

    workspace_id: PrintableId
    folder_id: PrintableId
    job_id: PrintableId
    workflow_id: PrintableId
    job_run_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$",
        json_schema_extra={"not": {"const": "stats"}},
        description="Letters, digits and _ . : - (not `stats`); generated when absent.",
    )
    from_job: _OptionalText | None = None
    parameters: dict[str, Any] | None = None

    @field_validator("job_run_id")
    @classmethod
    def _reachable(cls, value: str | None) -> str | None:
        # The id becomes a URL path segment: anything else could never be read back.
        if value is not None and not _JOB_RUN_ID.fullmatch(value):
            raise ValueError(
                "use letters, digits and _ . : - only, starting with a letter or digit"
            )
        if value == "stats":
            raise ValueError("`stats` is reserved: GET /workflow_runs/stats is the statistics page")
        return value

    @field_validator("parameters")
    @classmethod
    def _finite(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        where = non_finite_number_at(value)
        if where is not None:
            raise ValueError(f"numbers must be finite (JSON has no NaN or Infinity): at {where}")
        return value


class NodeOut(BaseModel):
    type: str
    status: str
    attempts: int
    max_attempts: int
    error: str | None
    output: Any = None
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    level: int = Field(
        0, description="The node's depth in the DAG: nodes of one level run in parallel."
    )


class RouteOut(BaseModel):
    rule: str | None = Field(description="The rule that routed the run; null for the default.")
    version: str | None = Field(description="The routing rules version in force.")
    reason: str


class RunOut(BaseModel):
    job_run_id: str
    workflow_id: str
    workspace_id: str
    folder_id: str
    job_id: str
    from_job: str | None
    backend: str
    status: str
    error: str | None
    created_at: datetime
    submitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    nodes: dict[str, NodeOut]
    routing: RouteOut | None = None
    waiting_for: str | None = Field(
        default=None,
        description="What the run waits for before it can start, when its backend is still "
        "coming up (Prefect's temporary API on the embedded default); null otherwise.",
    )

    @classmethod
    def from_view(cls, run: RunView, *, waiting_for: str | None = None) -> RunOut:
        return cls(
            waiting_for=waiting_for,
            job_run_id=run.job_run_id,
            workflow_id=run.workflow_id,
            workspace_id=run.workspace_id,
            folder_id=run.folder_id,
            job_id=run.job_id,
            from_job=run.from_job,
            backend=run.backend,
            status=run.status.value,
            error=run.error,
            created_at=run.created_at,
            submitted_at=run.submitted_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
            duration_seconds=_seconds(run.started_at, run.finished_at),
            nodes={
                node_id: NodeOut(
                    type=node.node_type,
                    status=node.status.value,
                    attempts=node.attempts,
                    max_attempts=node.max_attempts,
                    error=node.error,
                    output=store_relative(node.output, run.job_run_id),
                    started_at=node.started_at,
                    finished_at=node.finished_at,
                    duration_seconds=_seconds(node.started_at, node.finished_at),
                    level=node.level,
                )
                for node_id, node in run.nodes.items()
            },
            routing=None
            if run.route is None
            else RouteOut(rule=run.route.rule, version=run.route.version, reason=run.route.reason),
        )


class StatsOut(BaseModel):
    total: int
    by_status: dict[str, int]
    by_backend: dict[str, int]
    by_workflow: dict[str, dict[str, int]]


class LogLineOut(BaseModel):
    id: int
    time: datetime
    level: str
    node: str | None
    attempt: int
    message: str


class LogsOut(BaseModel):
    job_run_id: str
    lines: list[LogLineOut]
    next_after: int = Field(description="Pass as `after` to read the lines that follow.")


class TicketOut(BaseModel):
    ticket: str | None = Field(
        description="Open the WebSocket with `?ticket=` and this value, once; null when "
        "access control is off (no ticket is needed)."
    )
    expires_in_seconds: float = Field(description="The ticket is refused after this long.")


class WorkflowOut(BaseModel):
    workflow_id: str
    version: int
    registered_at: datetime
    updated_at: datetime
    definition: dict[str, Any]


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 6)


class ErrorItemOut(BaseModel):
    model_config = ConfigDict(extra="allow")  # a rules refusal adds the line

    field: str
    message: str


class ErrorOut(BaseModel):
    """Every error answer: what went wrong and what to do, and the fields at fault."""

    model_config = ConfigDict(extra="allow")  # a 503 on submit adds job_run_id and status

    detail: str
    errors: list[ErrorItemOut] = Field(default_factory=list)


#: The error answers any route may give, documented once for the OpenAPI schema.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": description}
    for code, description in {
        401: "no API key, or an unknown or revoked one (with access control on)",
        403: "the API key lacks the route's scope",
        404: "no such run, workflow, rule or version",
        409: "the run is not in a state that allows this",
        413: "the request body is too large",
        422: "the request is invalid: every field at fault, named",
        429: "too many requests for this API key; see Retry-After",
        502: "the backend refused the request",
        503: "the database or a backend is unavailable; see Retry-After",
    }.items()
}
