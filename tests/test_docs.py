"""The operator docs keep up with the code: every setting is documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import Settings

OPERATIONS = Path(__file__).resolve().parents[1] / "docs" / "operations.md"


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_in_the_operations_guide(name: str) -> None:
    assert f"`FIGWAY_{name.upper()}`" in OPERATIONS.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_says_what_it_is_for(name: str) -> None:
    assert Settings.model_fields[name].description, f"FIGWAY_{name.upper()} has no description"
