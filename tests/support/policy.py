"""The node policy every figway process a test starts is given.

Tests call their own functions from ``python`` nodes (``tests.*``) and a few standard
ones by exact name; figway's default allows only its demo callables.
"""

from __future__ import annotations

__all__ = ["TEST_PYTHON_CALLABLES", "test_policy_env"]

TEST_PYTHON_CALLABLES = ",".join(
    [
        "backends.nodes.demo:*",
        "tests.*:*",
        "hooks:*",  # a made-up module: definitions naming it are refused for other reasons
        "builtins:print",
        "json:loads",
        "logging:warning",
        "statistics:mean",
    ]
)


def test_policy_env() -> dict[str, str]:
    """The policy settings for a figway process's environment."""
    return {"FIGWAY_PYTHON_CALLABLES": TEST_PYTHON_CALLABLES}
