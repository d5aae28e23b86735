"""The gateway's agreement round: every executor is asked to make its view of ended runs
agree with the record; one that cannot be reached is skipped (its outage is the backend
check's to report) and never stops the others.

The Prefect side of the round, against a real server, is in the contract suite
(``tests/contract/test_prefect_executor_contract.py``).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from backends.model.errors import BackendUnavailableError
from gateway.services import Services


class Asked:
    def __init__(self, name: str, calls: list[str], *, failure: Exception | None = None) -> None:
        self.name = name
        self.calls = calls
        self.failure = failure

    def agree_with_record(self) -> None:
        self.calls.append(self.name)
        if self.failure is not None:
            raise self.failure


def test_an_unreachable_backend_is_skipped_and_the_others_are_still_asked() -> None:
    calls: list[str] = []
    services = SimpleNamespace(
        executors={
            "rq": Asked("rq", calls, failure=BackendUnavailableError("rq", "refused")),
            "prefect": Asked("prefect", calls),
        }
    )

    Services.agree_with_backends(services)  # type: ignore[arg-type]

    assert calls == ["rq", "prefect"]


def test_an_unexpected_error_is_not_swallowed() -> None:
    # The round's thread logs it as unexpected (gateway/upkeep/periodic.py).
    services = SimpleNamespace(
        executors={"prefect": Asked("prefect", [], failure=RuntimeError("a bug"))}
    )

    with pytest.raises(RuntimeError, match="a bug"):
        Services.agree_with_backends(services)  # type: ignore[arg-type]
