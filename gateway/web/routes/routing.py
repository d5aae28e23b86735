"""``/routing``: the rules in force, why a run would go where, history, guards, readiness."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from backends.contract import LEGACY_BACKEND
from backends.model.errors import NotFoundError, RolloutConflictError, RulesProblem
from backends.model.workflow import parse_definition, shadow_refusal
from backends.store.models import ShadowComparison
from backends.store.rollout_records import RolloutEventView, RolloutRow
from backends.store.routing_records import GuardTripView
from gateway.reports.readiness import rq_readiness
from gateway.routing.promotion import position_of
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


class RolloutEventOut(BaseModel):
    rule_id: str
    at: datetime
    action: str = Field(
        description="started, advanced, rolled_back, paused, resumed, pinned or reconciled."
    )
    from_percent: float | None
    to_percent: float | None
    by: str = Field(description="gateway (on evidence), or the key (and name) of a person.")
    reason: str
    evidence: dict[str, Any] = Field(description="The judgement the move rested on, if any.")

    @classmethod
    def of(cls, event: RolloutEventView) -> RolloutEventOut:
        values = dict(event.__dict__)
        values.pop("id")
        return cls(**values)


class RolloutOut(BaseModel):
    rule_id: str
    percent: float = Field(description="The share of the rule's runs sent to its backend.")
    step: int | None = Field(description="1-based index among the steps; null between steps.")
    steps: list[float]
    next_step: float | None
    state: str = Field(description="running, paused, pinned or complete.")
    text: str
    rolled_back: bool = Field(description="The rule is rolled back (a guard trip in force).")
    step_started_at: datetime = Field(description="Evidence at this step counts from here.")
    recent: list[RolloutEventOut] = Field(description="Its latest moves, newest first.")


def _rollout_out(services: Services, row: RolloutRow, *, recent: int = 10) -> RolloutOut:
    position = position_of(row)
    return RolloutOut(
        rule_id=row.rule_id,
        **{k: v for k, v in position.as_dict().items() if k != "percent"},
        percent=position.percent,
        rolled_back=row.rule_id in services.rules.router.tripped,
        step_started_at=row.step_started_at,
        recent=[
            RolloutEventOut.of(e)
            for e in services.rollouts.records.events(rule_id=row.rule_id, limit=recent)
        ],
    )


class RulesOut(BaseModel):
    version: str
    phase: int
    default: str
    source: str
    applied_at: datetime
    backends: dict[str, bool]
    rules: list[dict[str, Any]]
    tripped_guards: list[GuardTripOut]
    rollouts: list[RolloutOut] = Field(
        description="Each rule with steps: where it stands and its latest moves with evidence."
    )
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


class PlanOut(BaseModel):
    more_runs: int | None = Field(
        description="More runs a side a decision should take; null: none in sight; 0: decided."
    )
    runs_per_hour: float = Field(description="Runs finished per hour, slower side.")
    expected_seconds: int | None = Field(description="How long more_runs should take.")
    text: str


class GuardStatusOut(BaseModel):
    rule_id: str
    tripped: GuardTripOut | None
    would_trip: bool = Field(description="The guard's judge says worse now (a trip stays).")
    reason: str | None = Field(description="The guard's judgement in one sentence; null: none.")
    figures: dict[str, Any] | None = Field(
        description="The guard's judgement: every figure with its bounds, the runs, the window."
    )
    plan: PlanOut | None = Field(description="What the guard's judge still needs.")
    rollout: dict[str, Any] | None = Field(
        description="For a rule with steps: its position, the judgement at this step, its plan."
    )


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


def rules_out(services: Services) -> RulesOut:
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
        rollouts=[
            _rollout_out(services, row)
            for rule_id, row in sorted(services.rollouts.records.rollouts().items())
            if rule_id in services.rules.router.rollouts
        ],
        refused=None
        if refusal is None
        else RefusalOut(
            version=refusal.version,
            at=refusal.at,
            problems=[ProblemOut.of(p) for p in refusal.problems],
        ),
    )


def guard_statuses(services: Services) -> list[GuardStatusOut]:
    """Every guarded or stepped rule in force: its judgement now and what it still needs."""
    trips = services.records.tripped_guards()
    verdicts = {rule.id: verdict for rule, verdict in services.guards.status()}
    rollouts = {status.rule.id: status for status in services.rollouts.status()}
    found = []
    for rule in services.rules.document.rules.rules:
        if rule.id not in verdicts and rule.id not in rollouts:
            continue
        verdict = verdicts.get(rule.id)
        rollout = rollouts.get(rule.id)
        rollout_out = None
        if rollout is not None:
            rollout_out = rollout.as_dict()
            if rollout.plan is not None:
                rollout_out["plan"]["text"] = rollout.plan.describe()
        found.append(
            GuardStatusOut(
                rule_id=rule.id,
                tripped=GuardTripOut.of(trips[rule.id]) if rule.id in trips else None,
                would_trip=verdict is not None and verdict.trip,
                reason=None if verdict is None else verdict.reason,
                figures=None if verdict is None else verdict.figures(),
                plan=None
                if verdict is None
                else PlanOut(**verdict.plan.as_dict(), text=verdict.plan.describe()),
                rollout=rollout_out,
            )
        )
    return found


@router.get("/rules", response_model=RulesOut)
async def rules_in_force(services: ServicesDep) -> RulesOut:
    """The rules in force: version, phase, rules, tripped guards and the last refused file."""
    return await run_in_threadpool(rules_out, services)


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
    return await run_in_threadpool(rules_out, services)


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
    """Every guarded or stepped rule of the rules in force: the evidence now, the runs each
    side still needs for a decision, and how long that should take at the current rate."""

    return await run_in_threadpool(guard_statuses, services)


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
    who = _who(request, by)
    if not await run_in_threadpool(lambda: services.guards.reset(rule_id, by=who)):
        raise NotFoundError(f"the guard of rule {rule_id!r} is not tripped; nothing to reset")
    trips = await run_in_threadpool(lambda: services.records.guard_history(limit=100))
    return [GuardTripOut.of(t) for t in trips]


def _who(request: Request, by: str) -> str:
    key = acting_key(request)
    return by if key is None else f"{key} ({by})"  # the key that did it, whatever `by` claims


_ROLLOUT_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "the rule has no steps in the rules in force"},
    409: {"description": "the rollout cannot do that in its state"},
}
RuleId = Annotated[str, Path(min_length=1, max_length=128)]
By = Annotated[str, Query(min_length=1, max_length=100, description="Who does it.")]


async def _rollout_action(
    services: Services, rule_id: str, action: Any
) -> RolloutOut | JSONResponse:
    try:
        row = await run_in_threadpool(action)
    except RolloutConflictError as exc:
        return JSONResponse(status_code=409, content=error_body(str(exc), []))
    return await run_in_threadpool(lambda: _rollout_out(services, row))


@router.get("/rollouts/history", response_model=list[RolloutEventOut])
async def rollout_history(
    services: ServicesDep,
    rule_id: Annotated[str | None, Query(max_length=128, description="Only this rule.")] = None,
    limit: Annotated[int, Query(ge=1, le=1_000)] = 100,
) -> list[RolloutEventOut]:
    """Every move of every rollout in steps, newest first, with who and the evidence."""
    events = await run_in_threadpool(
        lambda: services.rollouts.records.events(rule_id=rule_id, limit=limit)
    )
    return [RolloutEventOut.of(e) for e in events]


@router.post("/rollouts/{rule_id}/pause", response_model=RolloutOut, responses=_ROLLOUT_ERRORS)
async def pause_rollout(
    services: ServicesDep, request: Request, rule_id: RuleId, by: By = "api"
) -> RolloutOut | JSONResponse:
    """Hold a rollout where it is (the guard keeps watching); recorded with the key."""
    who = _who(request, by)
    return await _rollout_action(
        services, rule_id, lambda: services.rollouts.pause(rule_id, by=who)
    )


@router.post("/rollouts/{rule_id}/resume", response_model=RolloutOut, responses=_ROLLOUT_ERRORS)
async def resume_rollout(
    services: ServicesDep, request: Request, rule_id: RuleId, by: By = "api"
) -> RolloutOut | JSONResponse:
    """Let a paused or pinned rollout advance on evidence again; recorded with the key."""
    who = _who(request, by)
    return await _rollout_action(
        services, rule_id, lambda: services.rollouts.resume(rule_id, by=who)
    )


@router.post("/rollouts/{rule_id}/pin", response_model=RolloutOut, responses=_ROLLOUT_ERRORS)
async def pin_rollout(
    services: ServicesDep,
    request: Request,
    rule_id: RuleId,
    by: By = "api",
    percent: Annotated[
        float | None,
        Query(gt=0, le=100, description="One of the rule's steps (default: where it is)."),
    ] = None,
) -> RolloutOut | JSONResponse:
    """Fix a rollout at one of its steps until resumed; recorded with the key."""
    who = _who(request, by)
    return await _rollout_action(
        services, rule_id, lambda: services.rollouts.pin(rule_id, by=who, percent=percent)
    )


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


@router.get("/in-flight", response_model=dict[str, dict[str, int]])
async def runs_in_flight(services: ServicesDep) -> dict[str, dict[str, int]]:
    """Client runs not finished yet, per backend and status (what each backend still holds)."""
    return await run_in_threadpool(services.records.runs_in_flight)


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
