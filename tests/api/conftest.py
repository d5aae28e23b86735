"""The gateway every ``tests/api`` test talks to, and its clients.

One gateway serves the whole folder (it takes a second to start); each test uses
ids of its own, so tests do not see each other's workflows or runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.api_client import Gateway
from tests.support.gateway import client_of, running_gateway


@pytest.fixture(scope="package")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The gateway on its embedded default: SQLite, fakeredis and in-process RQ workers."""
    with running_gateway(tmp_path_factory.mktemp("gateway")) as running:
        yield running


@pytest.fixture
def client(gateway: Gateway) -> Iterator[httpx.Client]:
    """An HTTP client for the package's gateway; any 5xx it receives fails the test."""
    with client_of(gateway) as http:
        yield http
