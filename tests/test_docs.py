"""The docs keep up with the code: every setting, and every node type's config, is documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.nodes import default_registry
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


NODES = Path(__file__).resolve().parents[1] / "docs" / "nodes.md"


def _node_section(name: str) -> str:
    """The part of docs/nodes.md under ``## name``."""
    text = NODES.read_text(encoding="utf-8")
    start = text.index(f"\n## {name}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


_DOCUMENTED_TYPES = sorted(
    name for name in default_registry() if name not in ("noop", "sleep", "fail")
)


@pytest.mark.parametrize("name", _DOCUMENTED_TYPES)
def test_every_node_type_and_its_config_fields_are_in_the_node_guide(name: str) -> None:
    section = _node_section(name)
    model = default_registry()[name].config_model
    for field_name, field in model.model_fields.items():
        assert f"`{field.alias or field_name}`" in section, f"{name}: `{field_name}` undocumented"


@pytest.mark.parametrize("name", sorted(default_registry()))
def test_every_node_config_field_says_what_it_is_for(name: str) -> None:
    model = default_registry()[name].config_model
    missing = [f for f, info in model.model_fields.items() if not info.description]
    assert not missing, f"{name}: fields without a description: {missing}"
