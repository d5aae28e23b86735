"""The operator docs keep up with the code: every setting is documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import Settings

OPERATIONS = Path(__file__).resolve().parents[1] / "docs" / "operations.md"


def variable(name: str) -> str:
    """The environment variable a setting is read from (an alias such as PREFECT_API_URL wins)."""
    alias = Settings.model_fields[name].validation_alias
    return alias if isinstance(alias, str) else f"FIGWAY_{name.upper()}"


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_in_the_operations_guide(name: str) -> None:
    assert f"`{variable(name)}`" in OPERATIONS.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_says_what_it_is_for(name: str) -> None:
    assert Settings.model_fields[name].description, f"{variable(name)} has no description"
