"""Secrets on the Prefect backend: the environment first, then Prefect Secret blocks.

``figway setup prefect --secrets-from-env`` copies every ``FIGWAY_SECRET_*``
variable of the machine it runs on into a Secret block named
``figway-<name>``, so Prefect's workers need no copy of the credentials in
their environment. Blocks are read when a node asks for the secret and kept
for :data:`CACHE_SECONDS`, so a rotated secret is used within that time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

from prefect.blocks.system import Secret

from backends.prefect.setup import SetupChange
from backends.runtime.secrets import ChainedSecrets, EnvironmentSecrets, block_name

__all__ = ["CACHE_SECONDS", "PrefectSecretBlocks", "prefect_secrets", "store_secret_blocks"]

CACHE_SECONDS = 60.0


class PrefectSecretBlocks:
    """Secret blocks on the Prefect server this process talks to."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[str | None, float]] = {}

    def get(self, name: str) -> str | None:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(name)
        if cached is not None and now - cached[1] < CACHE_SECONDS:
            return cached[0]
        value = self._load(name)
        with self._lock:
            self._cache[name] = (value, now)
        return value

    def describe(self, name: str) -> str:
        return (
            f"the Prefect Secret block {block_name(name)!r} (stored by `figway setup prefect "
            "--secrets-from-env`)"
        )

    @staticmethod
    def _load(name: str) -> str | None:
        try:
            secret = Secret.load(block_name(name), _sync=True)  # type: ignore[call-arg]
        except ValueError:  # Prefect's "Unable to find block document named …"
            return None
        value = secret.get()  # type: ignore[union-attr]  # _sync=True: never a coroutine
        return value if isinstance(value, str) else str(value)


_blocks = PrefectSecretBlocks()


def prefect_secrets() -> ChainedSecrets:
    """Where a node running on Prefect finds its secrets: the environment, then blocks."""
    return ChainedSecrets([EnvironmentSecrets(), _blocks])


def store_secret_blocks(values: Mapping[str, str]) -> list[SetupChange]:
    """Save each secret as a Secret block (overwriting); the values are never printed."""
    changes = []
    for name, value in sorted(values.items()):
        block: Secret[str] = Secret(value=value)  # type: ignore[arg-type]  # pydantic: str to SecretStr
        block.save(block_name(name), overwrite=True, _sync=True)  # type: ignore[call-arg]
        changes.append(SetupChange("secret block", block_name(name), "stored"))
    return changes
