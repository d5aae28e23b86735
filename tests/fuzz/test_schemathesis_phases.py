"""schemathesis' own runner, every phase (examples, coverage, fuzzing, stateful) with
every check, against `figway serve` on SQLite and on PostgreSQL. The stateful phase
follows the schema's links: a definition, a run of it, its status, kill and logs.

Bounded: 20 examples per operation and phase, deterministic, so a run takes about a
minute per database and finds the same things every time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import LoggedProcess, free_port

FIGWAY = str(Path(sys.executable).with_name("figway"))
SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
CONFIG = Path(__file__).with_name("schemathesis.toml")
EXAMPLES = 20


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.service)])
def gateway_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIGWAY_", "PREFECT_"))}
    env |= {
        "FIGWAY_DATA_DIR": str(tmp_path / "data"),
        "FIGWAY_AUTH": "off",  # the schema's own routes, not the door, are under test
        "FIGWAY_ARTIFACT_URL": os.environ["FIGWAY_TEST_ARTIFACT_URL"],
    }
    if request.param == "postgresql":
        env["FIGWAY_DATABASE_URL"] = request.getfixturevalue("pg_url")
    port = free_port()
    serve = LoggedProcess.start(
        "serve",
        [FIGWAY, "serve", "--port", str(port), "--ws-port", str(free_port())],
        env=env,
        log_dir=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert serve.running(), serve.tail()
            assert time.monotonic() < deadline, serve.tail()
            time.sleep(0.2)
        yield url
    finally:
        serve.stop()


@pytest.mark.timeout(900)
def test_every_phase_and_every_check_finds_nothing(gateway_url: str, tmp_path: Path) -> None:
    ran = subprocess.run(
        [
            SCHEMATHESIS,
            "--config-file",
            str(CONFIG),
            "--no-color",
            "run",
            f"{gateway_url}/openapi.json",
            # Every check is on by default (max_response_time needs a limit, so is not);
            # `--checks all` on the command line would override the config's two
            # per-operation exceptions, so it is not given.
            "--max-examples",
            str(EXAMPLES),
        ],
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
        cwd=tmp_path,  # its cache and reports stay in the test's folder
    )
    report = ran.stdout + ran.stderr
    assert ran.returncode == 0, report[-20_000:]
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in report, f"the {phase} phase did not pass:\n{report[-5_000:]}"
