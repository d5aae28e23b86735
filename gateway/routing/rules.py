"""The shape of ``routing_rules.yaml``: what a migration engineer writes.

These models check each field on its own; what needs the whole file (known
backends, the phase, rules no run can reach) is checked in
:mod:`gateway.routing.loading`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from backends.model.backend_names import LEGACY_BACKEND
from gateway.reports.judge import FINEST_FAILURE_INCREASE, FINEST_TIME_RATIO

__all__ = [
    "DEFAULT_WATCH",
    "GLOB_CHARACTERS",
    "PATTERN_FIELDS",
    "STICKY_KEYS",
    "BackendSwitch",
    "FigureName",
    "Guard",
    "Match",
    "Promote",
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


#: What a guard or a promotion may watch: the judge's figures (``gateway/reports/judge.py``).
FigureName = Literal["failure_rate", "queue_wait", "execution_time", "total_time"]
#: What a guard or a promotion watches when it does not say.
DEFAULT_WATCH: tuple[FigureName, ...] = ("failure_rate", "execution_time")


class _Judged(_Strict):
    """What the judge holds the rule's backend to: the figures watched and their margins."""

    watch: list[FigureName] | None = Field(
        default=None,
        min_length=1,
        max_length=4,
        description="The figures that decide: failure_rate, queue_wait, execution_time, "
        "total_time (default: failure_rate and execution_time).",
    )
    max_failure_rate_increase: float | None = Field(
        default=None,
        ge=FINEST_FAILURE_INCREASE,
        lt=1,
        description="The failure-rate increase that matters, above 0 and below 1 "
        "(0.05 = five percentage points; default 0.05).",
    )
    max_ratio: float | None = Field(
        default=None,
        ge=FINEST_TIME_RATIO,
        le=100,
        description="The slowdown that matters for a watched time, above 1 "
        "(1.2 = more than 1.2 times slower; default 1.2).",
    )
    confidence: float = Field(
        default=0.95,
        ge=0.5,
        le=0.999,
        description="Each answer is wrong at most 1 - confidence of the time, at every look.",
    )

    @field_validator("watch")
    @classmethod
    def _once_each(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("a figure is named twice")
        return value

    @property
    def watched(self) -> tuple[FigureName, ...]:
        return tuple(self.watch) if self.watch else DEFAULT_WATCH


class Guard(_Judged):
    """Roll the rule back when the judge finds its backend worse than the old one."""

    min_runs: int = Field(
        default=20,
        ge=1,
        le=1_000_000,
        description="Finished runs needed on each backend before the judge may answer.",
    )
    window_hours: float = Field(
        default=24, gt=0, le=24 * 90, description="Only runs finished this recently count."
    )
    max_p95_ratio: float | None = Field(
        default=None,
        ge=FINEST_TIME_RATIO,
        le=100,
        description="The older name of max_ratio, watching total time (accepted to finished).",
    )
    rollback_to: str = Field(
        default=LEGACY_BACKEND, description="Where the rule sends runs once tripped."
    )

    @model_validator(mode="after")
    def _one_ratio(self) -> Guard:
        if self.max_p95_ratio is not None and self.max_ratio is not None:
            raise ValueError("max_p95_ratio is the older name of max_ratio: set one of them")
        return self

    @property
    def time_ratio(self) -> float | None:
        return self.max_ratio if self.max_ratio is not None else self.max_p95_ratio

    @property
    def watched(self) -> tuple[FigureName, ...]:
        if self.watch:
            return tuple(self.watch)
        if self.max_p95_ratio is not None:
            # A guard written before the judge watched the failure rate (when it had a
            # margin) and the time from accepted to finished.
            older: tuple[FigureName, ...] = ("total_time",)
            if self.max_failure_rate_increase is not None:
                older = ("failure_rate", *older)
            return older
        return DEFAULT_WATCH


class Promote(_Judged):
    """Advance the rule's rollout one step when the judge finds its backend not worse."""

    min_runs: int = Field(
        default=50,
        ge=1,
        le=1_000_000,
        description="Finished runs needed on each backend at a step before it may advance.",
    )


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
    steps: list[Annotated[float, Field(gt=0, le=100)]] | None = Field(
        default=None,
        min_length=1,
        max_length=20,
        description="Rollout steps in percent, increasing (5, 25, 50, 100): the gateway "
        "advances when the judge finds the backend not worse.",
    )
    promote: Promote | None = Field(
        default=None, description="What a step must show before the rollout advances."
    )

    @field_validator("steps")
    @classmethod
    def _increasing(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and any(b <= a for a, b in pairwise(value)):
            listing = ", ".join(f"{step:g}" for step in value)
            raise ValueError(f"steps must increase, each above the one before: [{listing}]")
        return value

    @property
    def split(self) -> bool:
        """Whether the rule splits its runs by percentage (fixed, or in steps)."""
        return self.percent is not None or self.steps is not None

    @property
    def judged(self) -> Promote | None:
        """What advances the rollout: ``promote``, or else the guard's figures and margins."""
        if self.steps is None:
            return None
        if self.promote is not None:
            return self.promote
        if self.guard is None:
            return None
        guard = self.guard
        return Promote(
            watch=list(guard.watched),
            max_failure_rate_increase=guard.max_failure_rate_increase,
            max_ratio=guard.time_ratio,
            confidence=guard.confidence,
            min_runs=guard.min_runs,
        )

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
