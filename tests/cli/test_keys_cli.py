"""`figway keys`: a key is printed once, listed without its secret, and revoked once."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from gateway.cli.main import main


def test_figway_keys_create_list_and_revoke(cli_env: Path) -> None:
    runner = CliRunner()
    created = runner.invoke(main, ["keys", "create", "--name", "ci", "--scope", "runs"])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert re.fullmatch(r"fgw_[0-9a-f]{12}_\S{40,}", token)
    key_id = token.split("_")[1]
    listed = runner.invoke(main, ["keys", "list"])
    assert key_id in listed.output
    assert "in force" in listed.output
    assert token.split("_", 2)[2] not in listed.output  # never the secret
    revoked = runner.invoke(main, ["keys", "revoke", key_id])
    assert revoked.exit_code == 0
    assert "revoked" in runner.invoke(main, ["keys", "list"]).output
    again = runner.invoke(main, ["keys", "revoke", key_id])
    assert again.exit_code == 1
    assert "nothing revoked" in again.output


def test_a_key_limited_to_workspaces_says_so_when_created_and_listed(cli_env: Path) -> None:
    runner = CliRunner()
    created = runner.invoke(
        main,
        [
            "keys",
            "create",
            "--name",
            "team",
            "--scope",
            "runs",
            "--workspace",
            "ws1",
            "--workspace",
            "ws2",
        ],
    )
    assert created.exit_code == 0, created.output
    assert "workspaces: ws1, ws2" in created.stderr
    key_id = created.stdout.strip().split("_")[1]
    line = next(
        row for row in runner.invoke(main, ["keys", "list"]).output.splitlines() if key_id in row
    )
    assert "workspaces ws1,ws2" in line
    spaced = runner.invoke(
        main, ["keys", "create", "--name", "x", "--scope", "runs", "--workspace", "a b"]
    )
    assert spaced.exit_code != 0
    assert "no spaces" in spaced.output
