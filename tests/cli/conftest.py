"""Fixtures the unit tests share."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """For running `figway` in-process: no FIGWAY_* variable or .env file is seen, the
    working directory is an empty one (returned), and the data dir is ``tmp_path/data``."""
    for name in list(os.environ):
        if name.upper().startswith("FIGWAY_"):
            monkeypatch.delenv(name)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("FIGWAY_DATA_DIR", str(tmp_path / "data"))
    return workdir
