"""A proxy that times every method call of an object, to split a code path into phases."""

from __future__ import annotations

import functools
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any, TypeVar, cast

from sqlalchemy import Engine, event

__all__ = ["PhaseTimer", "StatementCounter"]

T = TypeVar("T")


class PhaseTimer:
    """Accumulates wall time per ``prefix.method`` of the objects it wraps.

    >>> timer = PhaseTimer()
    >>> numbers = timer.wrap([3, 1, 2], "list")
    >>> numbers.count(1), timer.calls["list.count"]
    (1, 1)
    """

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()

    def wrap(self, target: T, prefix: str) -> T:
        """``target`` as seen through a proxy that times its methods (typed as ``target``)."""
        return cast(T, _Timed(target, prefix, self))

    def add(self, key: str, seconds: float) -> None:
        self.seconds[key] += seconds
        self.calls[key] += 1

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    def per_unit_ms(self, units: int) -> dict[str, float]:
        """Milliseconds spent in each phase per unit of work (a submission, a node)."""
        return {key: self.seconds[key] * 1_000 / units for key in sorted(self.seconds)}


class _Timed:
    def __init__(self, target: Any, prefix: str, timer: PhaseTimer) -> None:
        self._target = target
        self._prefix = prefix
        self._timer = timer

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if not callable(attribute):
            return attribute
        return self._timed(f"{self._prefix}.{name}", attribute)

    def _timed(self, key: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self._timer.add(key, time.perf_counter() - began)

        return timed


class StatementCounter:
    """Counts the SQL statements and commits an engine sends (SQLAlchemy events)."""

    def __init__(self, engine: Engine) -> None:
        self.statements = 0
        self.commits = 0
        event.listen(engine, "before_cursor_execute", self._on_statement)
        event.listen(engine, "commit", self._on_commit)

    def _on_statement(self, *_: Any) -> None:
        self.statements += 1

    def _on_commit(self, *_: Any) -> None:
        self.commits += 1

    def reset(self) -> None:
        self.statements = 0
        self.commits = 0

    def per_unit(self, units: int) -> dict[str, float]:
        return {"statements": self.statements / units, "commits": self.commits / units}
