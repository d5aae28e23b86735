"""The shape of ``routing_rules.yaml``: what a migration engineer writes.

These models check each field on its own; what needs the whole file (known
backends, the phase, rules no run can reach) is checked in
:mod:`gateway.routing.loading`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from backends.model.backend_names import LEGACY_BACKEND

__all__ = [
    "GLOB_CHARACTERS",
    "PATTERN_FIELDS",
    "STICKY_KEYS",
    "BackendSwitch",
    "Guard",
    "Match",
    "Rule",
    "RulesFile",
    "is_literal",
]

#: Run fields a rule matches with glob patterns, in the order ``explain`` reports them.
PATTERN_FIELDS = ("workflow_id", "workspace_id", "folder_id", "job_id")
#: Run fields a percentage rollout may bucket on.
STICKY_KEYS = ("job_id", "workflow_id", "workspace_id", "folder_id")
GLOB_CHARACTERS = frozenset("*?[")

Pattern = Annotated[str, Field(min_length=1, max_length=256)]
Patterns = Pattern | Annotated[list[Pattern], Field(min_length=1, max_length=1_000)]


def is_literal(pattern: str) -> bool:
    """True when ``pattern`` has no glob characters, so only the same string matches it."""
    return not GLOB_CHARACTERS.intersection(pattern)


class _Strict(BaseModel):
    # A typo in a rules file must be an error, not a silently ignored key.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(_Strict):
    """What a run must have for the rule to apply; an empty match applies to every run."""

    workflow_id: Patterns | None = None
    workspace_id: Patterns | None = None
    folder_id: Patterns | None = None
    job_id: Patterns | None = None
    tags: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list, max_length=32, description="The workflow has every one of these."
    )
    registered_after: datetime | None = Field(
        default=None, description="The workflow was first defined after this (UTC) time."
    )

    @field_validator("registered_after", mode="before")
    @classmethod
    def _midnight(cls, value: Any) -> Any:
        # YAML reads `2026-12-01` as a date: midnight UTC is what people mean by it.
        if isinstance(value, date) and not isinstance(value, datetime):
            return datetime.combine(value, time(), tzinfo=UTC)
        return value

    @field_validator("registered_after")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        # A time without a zone is UTC; one with a zone is converted, so messages say UTC truly.
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def patterns(self, field: str) -> tuple[str, ...] | None:
        """The patterns of one field as a tuple (any may match), None when unconstrained."""
        value: str | list[str] | None = getattr(self, field)
        if value is None:
            return None
        return (value,) if isinstance(value, str) else tuple(value)

    def is_catch_all(self) -> bool:
        return all(self.patterns(f) is None for f in PATTERN_FIELDS) and not (
            self.tags or self.registered_after
        )


class Guard(_Strict):
    """Roll the rule back when its new backend does worse than the old one."""

    min_runs: int = Field(
        default=20, ge=1, le=1_000_000, description="Finished runs needed on each backend."
    )
    window_hours: float = Field(
        default=24, gt=0, le=24 * 90, description="Only runs finished this recently count."
    )
    max_failure_rate_increase: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Trip when the failure rate exceeds the old backend's by more than this "
        "(0.05 = five percentage points).",
    )
    max_p95_ratio: float | None = Field(
        default=None,
        ge=1,
        le=1_000,
        description="Trip when p95 run time (accepted to finished) exceeds the old backend's "
        "by more than this factor.",
    )
    rollback_to: str = Field(
        default=LEGACY_BACKEND, description="Where the rule sends runs once tripped."
    )

    @model_validator(mode="after")
    def _has_a_threshold(self) -> Guard:
        if self.max_failure_rate_increase is None and self.max_p95_ratio is None:
            raise ValueError("set max_failure_rate_increase, max_p95_ratio or both")
        return self


class Rule(_Strict):
    id: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$",
        description="Recorded on every run the rule routes; keep it stable.",
    )
    description: str = Field(default="", max_length=2_000)
    match: Match = Field(default_factory=Match)
    backend: str
    percent: float | None = Field(
        default=None, ge=0, le=100, description="Share of matching runs sent to `backend`."
    )
    otherwise: str | None = Field(
        default=None, description="Where the rest of a percentage goes; the file's default."
    )
    sticky_by: Literal["job_id", "workflow_id", "workspace_id", "folder_id"] | None = Field(
        default=None, description="The key a percentage buckets on (job_id)."
    )
    salt: str | None = Field(
        default=None,
        max_length=128,
        description="Mixed into the bucket hash; defaults to the rule id.",
    )
    shadow: str | None = Field(default=None, description="Also run on this backend, to compare.")
    fallback: str | None = Field(
        default=None, description="Where runs go while `backend` is unreachable."
    )
    guard: Guard | None = None

    @property
    def bucket_key(self) -> str:
        return self.sticky_by or "job_id"

    @property
    def bucket_salt(self) -> str:
        return self.salt if self.salt is not None else self.id


class BackendSwitch(_Strict):
    enabled: bool = True


class RulesFile(_Strict):
    phase: Literal[1, 2, 3] = Field(
        description="1 parallel deployment, 2 gradual migration, 3 full migration."
    )
    default: str = Field(description="Backend for runs no rule matches.")
    backends: dict[str, BackendSwitch] = Field(
        default_factory=dict, description="Switch a backend off (every backend is on)."
    )
    rules: list[Rule] = Field(default_factory=list, max_length=10_000)

    def enabled(self, backend: str) -> bool:
        switch = self.backends.get(backend)
        return switch is None or switch.enabled
