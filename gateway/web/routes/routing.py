"""``/routing``: the rules in force, why a run would go where, history, guards, readiness."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from backends.contract import LEGACY_BACKEND
from backends.model.errors import NotFoundError, RulesProblem
from backends.model.workflow import parse_definition, shadow_refusal
from backends.store.models import ShadowComparison
from backends.store.routing_records import GuardTripView
from gateway.reports.readiness import rq_readiness
from gateway.routing.router import RunFacts
from gateway.routing.shadow import with_shadow
from gateway.services import Services
from gateway.web.auth import acting_key
from gateway.web.deps import ServicesDep
from gateway.web.errors import error_body

router = APIRouter(prefix="/routing", tags=["routing"])


class ProblemOut(BaseModel):
    line: int | None
    field: str
    message: str

    @classmethod
    def of(cls, problem: RulesProblem) -> ProblemOut:
        return cls(line=problem.line, field=problem.field, message=problem.message)


class RefusalOut(BaseModel):
    version: str | None = Field(description="The refused content's version; null if unreadable.")
    at: datetime
    problems: list[ProblemOut]


class GuardTripOut(BaseModel):
    rule_id: str
    rules_version: str
    tripped_at: datetime
    reason: str
    figures: dict[str, Any]
    reset_at: datetime | None
    reset_by: str | None

    @classmethod
    def of(cls, trip: GuardTripView) -> GuardTripOut:
        return cls(**trip.__dict__)


class RulesOut(BaseModel):
    version: str
    phase: int
    default: str
    source: str
    applied_at: datetime
    backends: dict[str, bool]
    rules: list[dict[str, Any]]
    tripped_guards: list[GuardTripOut]
    refused: RefusalOut | None = Field(
        description="The last file refused since this version took effect, with every problem."
    )


class DecisionOut(BaseModel):
    backend: str
    rule_id: str | None
    version: str
    reason: str
    shadow: str | None
    fallback: str | None
    passed_over: list[str]
    workflow_registered: bool


class AppliedOut(BaseModel):
    version: str
    phase: int
    source: str
    applied_at: datetime


class VersionOut(BaseModel):
    version: str
    phase: int
    first_applied_at: datetime
    content: str


class GuardStatusOut(BaseModel):
    rule_id: str
    tripped: GuardTripOut | None
    would_trip: bool = Field(description="What the figures say now (a tripped guard stays).")
    reason: str
    figures: dict[str, Any]


class ReadinessOut(BaseModel):
    ready: bool
    holds: list[str]
    figures: dict[str, Any]


class ShadowOut(BaseModel):
    job_run_id: str
    shadow_run_id: str
    workflow_id: str
    primary_backend: str
    shadow_backend: str
    matched: bool
    mismatches: list[dict[str, Any]]
    compared_at: datetime


def _rules_out(services: Services) -> RulesOut:
    source = services.rules
    document = source.document
    rules = document.rules
    refusal = source.refusal
    return RulesOut(
        version=document.version,
        phase=rules.phase,
        default=rules.default,
        source=document.source,
        applied_at=source.applied_at,
        backends={name: rules.enabled(name) for name in services.executors},
        rules=[rule.model_dump(mode="json", exclude_defaults=True) for rule in rules.rules],
        tripped_guards=[GuardTripOut.of(t) for t in services.records.tripped_guards().values()],
        refused=None
        if refusal is None
        else RefusalOut(
            version=refusal.version,
            at=refusal.at,
            problems=[ProblemOut.of(p) for p in refusal.problems],
        ),
    )


@router.get("/rules", response_model=RulesOut)
async def rules_in_force(services: ServicesDep) -> RulesOut:
    """The rules in force: version, phase, rules, tripped guards and the last refused file."""
    return await run_in_threadpool(_rules_out, services)


@router.post("/reload", response_model=RulesOut, responses={422: {"description": "refused"}})
async def reload_rules(services: ServicesDep, request: Request) -> RulesOut | JSONResponse:
    """Read the rules file now; 422 with every problem (and nothing changed) if it is bad."""
    await run_in_threadpool(lambda: services.rules.reload(by=acting_key(request)))
    refusal = services.rules.refusal
    if refusal is not None:
        errors = [
            {"field": p.field, "line": p.line, "message": p.message} for p in refusal.problems
        ]
        detail = (
            f"the rules file was refused ({len(errors)} problem(s)); "
            f"version {services.rules.version} stays in force"
        )
        return JSONResponse(status_code=422, content=error_body(detail, errors))
    return await run_in_threadpool(_rules_out, services)


@router.get("/explain", response_model=DecisionOut)
async def explain(
    services: ServicesDep,
    workflow_id: Annotated[str, Query(min_length=1, max_length=128)],
    job_id: Annotated[str, Query(min_length=1, max_length=128)] = "job",
    workspace_id: Annotated[
        str | None, Query(max_length=128, description="For a workflow not registered yet.")
    ] = None,
    folder_id: Annotated[
        str | None, Query(max_length=128, description="For a workflow not registered yet.")
    ] = None,
    tag: Annotated[
        list[str] | None,
        Query(max_length=32, description="For a workflow not registered yet (repeatable)."),
    ] = None,
) -> DecisionOut:
    """Where a run of this workflow and job would go now, and why."""
    workflow = await run_in_threadpool(lambda: services.store.get_workflow(workflow_id=workflow_id))
    refusal = None
    if workflow is not None:
        definition = parse_definition(
            workflow.definition,
            node_types=services.node_types,
            max_levels=services.settings.max_levels,
        )
        facts = RunFacts.of_definition(
            definition, job_id=job_id, registered_at=workflow.registered_at
        )
        refusal = shadow_refusal(definition, services.node_types)
    else:
        facts = RunFacts(
            workflow_id, workspace_id or "", folder_id or "", job_id, tags=frozenset(tag or ())
        )
    explanation = services.rules.router.explain(facts)
    decision = explanation.decision
    reason, shadow = with_shadow(decision.reason, decision.shadow, refusal)
    return DecisionOut(
        backend=decision.backend,
        rule_id=decision.rule_id,
        version=decision.version,
        reason=reason,
        shadow=shadow,
        fallback=decision.fallback,
        passed_over=list(explanation.passed_over),
        workflow_registered=workflow is not None,
    )


@router.get("/history", response_model=list[AppliedOut])
async def history(
    services: ServicesDep, limit: Annotated[int, Query(ge=1, le=1_000)] = 100
) -> list[AppliedOut]:
    """Rules versions put in force, newest first."""
    applied = await run_in_threadpool(lambda: services.records.history(limit=limit))
    return [AppliedOut(**a.__dict__) for a in applied]


@router.get("/history/{version}", response_model=VersionOut)
async def version_content(
    services: ServicesDep, version: Annotated[str, Path(min_length=1, max_length=64)]
) -> VersionOut:
    """A version's exact content, to read it back or to restore it."""
    row = await run_in_threadpool(lambda: services.records.rules_content(version=version))
    if row is None:
        raise NotFoundError(f"no rules version {version!r} was ever applied")
    return VersionOut(
        version=row.content_hash,
        phase=row.phase,
        first_applied_at=row.first_applied_at,
        content=row.content,
    )


@router.get("/guards/status", response_model=list[GuardStatusOut])
async def guard_status(services: ServicesDep) -> list[GuardStatusOut]:
    """Every guard of the rules in force with the figures it judges on now."""

    def current() -> list[GuardStatusOut]:
        trips = services.records.tripped_guards()
        return [
            GuardStatusOut(
                rule_id=rule.id,
                tripped=GuardTripOut.of(trips[rule.id]) if rule.id in trips else None,
                would_trip=verdict.trip,
                reason=verdict.reason,
                figures=verdict.figures(),
            )
            for rule, verdict in services.guards.status()
        ]

    return await run_in_threadpool(current)


@router.get("/guards", response_model=list[GuardTripOut])
async def guard_trips(
    services: ServicesDep, limit: Annotated[int, Query(ge=1, le=1_000)] = 100
) -> list[GuardTripOut]:
    """Guard trips, newest first, in force (no reset_at) or reset."""
    trips = await run_in_threadpool(lambda: services.records.guard_history(limit=limit))
    return [GuardTripOut.of(t) for t in trips]


@router.post("/guards/{rule_id}/reset", response_model=list[GuardTripOut])
async def reset_guard(
    services: ServicesDep,
    request: Request,
    rule_id: Annotated[str, Path(min_length=1, max_length=128)],
    by: Annotated[str, Query(min_length=1, max_length=100, description="Who resets it.")] = "api",
) -> list[GuardTripOut]:
    """Put a rule whose guard tripped back in force; 404 when its guard is not tripped."""
    key = acting_key(request)
    if key is not None:  # recorded as the key that did it, whatever `by` claims
        by = f"{key} ({by})"
    if not await run_in_threadpool(lambda: services.guards.reset(rule_id, by=by)):
        raise NotFoundError(f"the guard of rule {rule_id!r} is not tripped; nothing to reset")
    trips = await run_in_threadpool(lambda: services.records.guard_history(limit=100))
    return [GuardTripOut.of(t) for t in trips]


@router.get("/readiness", response_model=ReadinessOut)
async def readiness(services: ServicesDep) -> ReadinessOut:
    """Phase 3: whether RQ can be switched off, and what still holds it."""

    def check() -> ReadinessOut:
        result = rq_readiness(
            table=services.rules.router.table,
            workflows=services.records.workflows(),
            records=services.records,
            legacy=services.executors[LEGACY_BACKEND],
        )
        return ReadinessOut(ready=result.ready, holds=list(result.holds), figures=result.figures)

    return await run_in_threadpool(check)


@router.get("/shadow-mismatches", response_model=list[ShadowOut])
async def shadow_mismatches(
    services: ServicesDep, limit: Annotated[int, Query(ge=1, le=1_000)] = 100
) -> list[ShadowOut]:
    """The latest runs whose shadow ended differently, newest first, with the differences."""
    rows = await run_in_threadpool(lambda: services.records.mismatched_shadows(limit=limit))
    return [_shadow_out(row) for row in rows]


@router.get("/shadows/{job_run_id}", response_model=ShadowOut)
async def shadow_comparison(
    services: ServicesDep, job_run_id: Annotated[str, Path(min_length=1, max_length=128)]
) -> ShadowOut:
    """How a run compared with its shadow run; 404 until both finished and were compared."""
    row = await run_in_threadpool(lambda: services.records.comparison(job_run_id=job_run_id))
    if row is None:
        raise NotFoundError(
            f"no shadow comparison for run {job_run_id!r} (not shadowed, or not finished yet)"
        )
    return _shadow_out(row)


def _shadow_out(row: ShadowComparison) -> ShadowOut:
    return ShadowOut(
        job_run_id=row.job_run_id,
        shadow_run_id=row.shadow_run_id,
        workflow_id=row.workflow_id,
        primary_backend=row.primary_backend,
        shadow_backend=row.shadow_backend,
        matched=row.matched,
        mismatches=row.mismatches,
        compared_at=row.compared_at,
    )


@router.get("/shadows", response_model=dict[str, dict[str, int]])
async def shadow_summary(services: ServicesDep) -> dict[str, dict[str, int]]:
    """Per workflow: shadow comparisons made and how many mismatched."""
    return await run_in_threadpool(services.records.shadow_summary)
