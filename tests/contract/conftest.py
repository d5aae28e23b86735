"""Show the workers' logs with any failing contract test."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from tests.contract.executor_contract import ExecutorHarness


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    harness = getattr(item, "funcargs", {}).get("harness")
    if report.failed and isinstance(harness, ExecutorHarness):
        logs = harness.worker_logs()
        if logs:
            report.sections.append(("worker logs", logs))
    return report
