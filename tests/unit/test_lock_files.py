"""The lock files say what pyproject.toml asks for, every package pinned with its hashes;
the production lock holds no test tool and no embedded Redis stand-in."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def pins(lock: str) -> dict[str, str]:
    text = (ROOT / "requirements" / lock).read_text(encoding="utf-8")
    found = {
        canonicalize_name(name): version
        for name, version in re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", text, flags=re.MULTILINE)
    }
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    unhashed = [
        block.split()[0] for block in blocks if block.strip() and "--hash=sha256:" not in block
    ]
    assert unhashed == [], f"{lock}: pinned without a hash"
    return found


@pytest.mark.parametrize(
    ("lock", "extras"),
    [("production.lock", ()), ("dev.lock", ("dev", "embedded", "bigquery"))],
)
def test_every_requirement_is_pinned_to_a_version_it_allows(
    lock: str, extras: tuple[str, ...]
) -> None:
    pinned = pins(lock)
    wanted = [*PROJECT["dependencies"]]
    for extra in extras:
        wanted += PROJECT["optional-dependencies"][extra]
    for line in wanted:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{lock}: {name} is not locked; run `make lock`"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{lock}: {name}=={pinned[name]} is outside {requirement.specifier}; run `make lock`"
        )


def test_production_holds_neither_test_tools_nor_the_embedded_stand_in() -> None:
    pinned = pins("production.lock")
    for name in ("fakeredis", "pytest", "hypothesis", "schemathesis", "mypy", "ruff", "pip-audit"):
        assert name not in pinned, name
    assert "fakeredis" in pins("dev.lock")
