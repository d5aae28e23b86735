"""``figway workflows``: validate and store workflow definitions from files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import yaml

from backends.model.errors import DefinitionError
from backends.model.workflow import parse_definition
from backends.nodes import default_registry
from backends.store import Store
from gateway.cli.support import migrated_engine, settings_or_exit

_DEFINITION_SUFFIXES = (".yaml", ".yml", ".json")

__all__ = ["workflows"]


@click.group()
def workflows() -> None:
    """Workflow definitions."""


@workflows.command("load")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--check", is_flag=True, help="Only validate; store nothing.")
def workflows_load(paths: tuple[Path, ...], check: bool) -> None:
    """Validate and store definitions from YAML/JSON files or folders of them."""
    settings = settings_or_exit()
    files = sorted(_definition_files(paths))
    if not files:
        raise click.ClickException(
            f"no {', '.join(_DEFINITION_SUFFIXES)} files under the given paths"
        )
    store: Store | None = None
    if not check:
        store = Store(migrated_engine(settings))
    node_types = default_registry(settings.node_policy())
    failures = 0
    for path in files:
        try:
            definition = parse_definition(
                _read_definition(path), node_types=node_types, max_levels=settings.max_levels
            )
        except DefinitionError as exc:
            failures += 1
            click.echo(f"{path}: refused", err=True)
            for problem in exc.problems:
                click.echo(f"  - {problem}", err=True)
            continue
        except (OSError, ValueError) as exc:
            failures += 1
            click.echo(f"{path}: cannot read: {exc}", err=True)
            continue
        if store is None:
            click.echo(f"{path}: ok ({definition.workflow_id})")
            continue
        version, created = store.put_workflow(definition=definition)
        state = "created" if created else f"version {version}"
        click.echo(f"{path}: {definition.workflow_id} {state}")
    if failures:
        raise click.ClickException(f"{failures} of {len(files)} definition(s) refused")


def _definition_files(paths: tuple[Path, ...]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(p for p in path.rglob("*") if p.suffix in _DEFINITION_SUFFIXES)
        else:
            found.append(path)
    return found


def _read_definition(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    try:
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"invalid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError("a definition must be a mapping with workflow_id, nodes, dependencies")
    return document
