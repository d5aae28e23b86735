"""The node types every figway install has: noop, sleep, fail and python."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from backends.model.errors import NodeCancelledError, NodeFailedError
from backends.nodes.base import Admission, NodeConfig, NodeContext, NodeType, SideEffects

__all__ = ["BUILTIN_NODE_TYPES", "NodeCancelledError", "NodeFailedError"]


class NoopConfig(NodeConfig):
    pass


def run_noop(config: NoopConfig, context: NodeContext) -> None:
    return None


class SleepConfig(NodeConfig):
    seconds: float = Field(ge=0, le=86_400, description="How long to sleep.")


def run_sleep(config: SleepConfig, context: NodeContext) -> dict[str, float]:
    # Waiting on the run's cancel event, not time.sleep, is what lets a kill stop it at once.
    if context.wait(config.seconds):
        raise NodeCancelledError(f"stopped after the run was cancelled (slept < {config.seconds}s)")
    return {"slept_seconds": config.seconds}


class FailConfig(NodeConfig):
    times: int | None = Field(
        default=None, ge=1, description="Fail the first N attempts; every attempt when absent."
    )
    message: str = Field(
        default="node failed on purpose", max_length=2_000, description="The error to fail with."
    )


def run_fail(config: FailConfig, context: NodeContext) -> dict[str, int]:
    if config.times is None or context.attempt <= config.times:
        raise NodeFailedError(config.message)
    return {"succeeded_on_attempt": context.attempt}


class PythonConfig(NodeConfig):
    callable: str = Field(
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description='The function to call, as "package.module:function".',
    )
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments the function is called with."
    )
    side_effects_: SideEffects = Field(
        default="unsafe",
        alias="side_effects",
        description="What the function does outside figway. Custom code is taken to write "
        "(`unsafe`) unless it says `none`, or `sandboxed` when it writes nothing while "
        "`context.sandboxed` is set; only the last two may run in a shadow run.",
    )

    @field_validator("callable")
    @classmethod
    def _allowed(cls, value: str, info: ValidationInfo) -> str:
        # Checked where the workflow is defined and again on the worker before the call:
        # a definition stored before the policy changed is held to the worker's policy.
        refusal = Admission.of(info).policy.callable_refusal(value)
        if refusal is not None:
            raise ValueError(refusal)
        return value

    def side_effects(self) -> SideEffects:
        return self.side_effects_


def run_python(config: PythonConfig, context: NodeContext) -> object:
    function = _load_callable(config.callable)
    kwargs = dict(config.kwargs)
    # A function that asks for `context` gets it; plain functions stay plain.
    if _accepts_context(function):
        kwargs["context"] = context
    return function(**kwargs)


def _accepts_context(function: Callable[..., object]) -> bool:
    try:
        return "context" in inspect.signature(function).parameters
    except (TypeError, ValueError):  # some builtins (dict, int) have no signature
        return False


def _load_callable(reference: str) -> Callable[..., object]:
    module_name, _, attribute = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise NodeFailedError(f"cannot import module {module_name!r}: {exc}") from exc
    function = getattr(module, attribute, None)
    if not callable(function):
        raise NodeFailedError(f"{reference!r} is not a callable in module {module_name!r}")
    return function  # type: ignore[no-any-return]


BUILTIN_NODE_TYPES: tuple[NodeType, ...] = (
    NodeType("noop", NoopConfig, run_noop, "Does nothing; for wiring and benchmarks."),
    NodeType("sleep", SleepConfig, run_sleep, "Sleeps `seconds`; stops at once when killed."),
    NodeType("fail", FailConfig, run_fail, "Fails the first `times` attempts (all if absent)."),
    NodeType(
        "python",
        PythonConfig,
        run_python,
        'Calls `callable` ("module:function").',
        runs_code=True,
    ),
)
