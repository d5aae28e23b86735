"""The backends a run can go to, named once.

``rq`` is the legacy backend the migration moves away from, ``prefect`` the one
it moves to. Everything that names a backend (settings, definitions' ``backend``
pin, routing rules, reports, the composition root) takes the names from here,
so adding a backend starts with one line.

>>> BACKEND_NAMES
('rq', 'prefect')
"""

from __future__ import annotations

from typing import Final, Literal, get_args

__all__ = ["BACKEND_NAMES", "LEGACY_BACKEND", "SUCCESSOR_BACKEND", "BackendName"]

BackendName = Literal["rq", "prefect"]

#: Every backend, the legacy one first.
BACKEND_NAMES: Final[tuple[BackendName, ...]] = get_args(BackendName)
#: Where workflows run today, and where a tripped guard sends them back.
LEGACY_BACKEND: Final[BackendName] = "rq"
#: Where the migration moves them: the candidate every report holds against the legacy one.
SUCCESSOR_BACKEND: Final[BackendName] = "prefect"
