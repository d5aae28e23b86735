"""Running a real figway gateway in this process, for HTTP tests: on its embedded default,
or on PostgreSQL with access control on (``production_gateway``).

The gateway is served by uvicorn on a free loopback port. Every response its
clients get goes through a hook that records 5xx answers: a test that provoked
one fails at teardown, whatever it asserted.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from gateway.config import Settings
from gateway.web.app import create_app
from tests.support.api_client import EMBEDDED_WORKERS, HEARTBEAT_SECONDS, Gateway
from tests.support.policy import test_policy_env

__all__ = ["client_of", "production_gateway", "running_gateway"]

STARTUP_SECONDS = 30


@dataclass
class ServerErrors:
    """5xx responses seen by a test's client."""

    seen: list[str] = field(default_factory=list)

    def record(self, response: httpx.Response) -> None:
        if response.status_code >= 500:
            response.read()
            self.seen.append(
                f"{response.request.method} {response.request.url.path} -> "
                f"{response.status_code}: {response.text[:500]}"
            )


def _listening_socket() -> socket.socket:
    # Bound here and handed to uvicorn, so no other process can take the port meanwhile.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _wait_until_healthy(base_url: str, server_thread: threading.Thread) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    with httpx.Client(base_url=base_url, timeout=2) as client:
        while time.monotonic() < deadline:
            if not server_thread.is_alive():
                pytest.fail("the gateway stopped while starting; see the captured log")
            try:
                if client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    pytest.fail(f"the gateway did not answer /healthz within {STARTUP_SECONDS} s")


@contextmanager
def running_gateway(data_dir: Path, **overrides: Any) -> Iterator[Gateway]:
    """A gateway on its embedded default in ``data_dir``, with ``overrides`` on its settings."""
    with pytest.MonkeyPatch.context() as env:
        # Nothing from the developer's shell may turn this into another mode.
        for name in list(os.environ):
            if name.upper().startswith("FIGWAY_"):
                env.delenv(name)
        for name, value in test_policy_env().items():
            env.setenv(name, value)
        env.chdir(data_dir)
        settings = Settings(
            **{
                "_env_file": None,
                "data_dir": data_dir,
                "database_url": None,
                "redis_url": None,
                "auto_migrate": None,
                "embedded_workers": EMBEDDED_WORKERS,
                "heartbeat_seconds": HEARTBEAT_SECONDS,
                "node_silence_seconds": 10,
                "reconcile_interval_seconds": 0.5,
                "metrics_fold_seconds": 0.3,
                "backend_check_seconds": 0.5,
                # On PostgreSQL the default would require API keys; tests/access turns it on.
                "auth": "off",
                # Prefect's temporary API starts at the first Prefect run, as it did before
                # the early start: most tests never send one, and a server started by every
                # test gateway would be a process per test (tests/cli/test_serve_process.py
                # tries the early start on `figway serve`).
                "prefect_early_start": False,
                **overrides,
            }
        )
        assert settings.embedded
        sock = _listening_socket()
        host, port = sock.getsockname()
        config = uvicorn.Config(
            create_app(settings), host=host, port=port, log_level="warning", lifespan="on"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="figway-api-test", daemon=True
        )
        thread.start()
        base_url = f"http://{host}:{port}"
        try:
            _wait_until_healthy(base_url, thread)
            yield Gateway(base_url=base_url, settings=settings)
        finally:
            server.should_exit = True
            thread.join(timeout=60)
            sock.close()
            if thread.is_alive():
                pytest.fail("the gateway did not shut down within 60 s")


@contextmanager
def production_gateway(database_url: str, data_dir: Path) -> Iterator[Gateway]:
    """A gateway on the PostgreSQL database at ``database_url`` with access control on,
    as production runs it (its RQ workers still in-process); keys are made with
    ``tests.support.keys``. ``tests/conftest.py`` gives each module one."""
    with running_gateway(data_dir, database_url=database_url, auth="on") as running:
        yield running


@contextmanager
def client_of(gateway: Gateway) -> Iterator[httpx.Client]:
    """An HTTP client for ``gateway``; any 5xx it receives fails the test at teardown."""
    errors = ServerErrors()
    with httpx.Client(
        base_url=gateway.base_url, timeout=30, event_hooks={"response": [errors.record]}
    ) as http:
        yield http
    if errors.seen:
        # pytrace=False: the server thread may still be logging its traceback, and two
        # threads rendering tracebacks at once can crash Python 3.11 (CPython gh-106905).
        pytest.fail("the gateway answered 5xx:\n" + "\n".join(errors.seen), pytrace=False)
