"""Settings: the embedded defaults, the FIGWAY_ environment prefix and the .env file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.config import Settings, get_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No FIGWAY_* variable and no .env from the developer's shell leak into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("FIGWAY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_are_the_embedded_mode() -> None:
    settings = Settings()
    assert settings.data_dir == Path(".figway")
    assert settings.database_url is None
    assert settings.redis_url is None
    assert settings.embedded is True
    assert settings.max_levels == 20
    assert settings.default_backend == "rq"


def test_the_default_database_is_sqlite_under_data_dir(tmp_path: Path) -> None:
    assert Settings().resolved_database_url() == f"sqlite:///{tmp_path / '.figway' / 'figway.db'}"
    elsewhere = tmp_path / "state"
    assert Settings(data_dir=elsewhere).resolved_database_url() == (
        f"sqlite:///{elsewhere / 'figway.db'}"
    )


def test_auto_migrate_only_without_a_database_url() -> None:
    assert Settings().should_auto_migrate() is True
    configured = Settings(database_url="postgresql://u@db/figway")
    assert configured.should_auto_migrate() is False
    assert configured.resolved_database_url() == "postgresql://u@db/figway"
    assert Settings(database_url="postgresql://u@db/f", auto_migrate=True).should_auto_migrate()
    assert Settings(auto_migrate=False).should_auto_migrate() is False


def test_settings_come_from_figway_prefixed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIGWAY_REDIS_URL", "redis://cache:6379/2")
    monkeypatch.setenv("FIGWAY_DATABASE_URL", "postgresql://u@db/figway")
    monkeypatch.setenv("FIGWAY_MAX_LEVELS", "7")
    monkeypatch.setenv("FIGWAY_DATA_DIR", "/srv/figway")
    settings = get_settings()
    assert settings.redis_url == "redis://cache:6379/2"
    assert settings.embedded is False
    assert settings.database_url == "postgresql://u@db/figway"
    assert settings.should_auto_migrate() is False
    assert settings.max_levels == 7
    assert settings.data_dir == Path("/srv/figway")


def test_unprefixed_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/2")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db/figway")
    settings = Settings()
    assert settings.redis_url is None
    assert settings.database_url is None


def test_overrides_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIGWAY_MAX_LEVELS", "7")
    assert get_settings(max_levels=9).max_levels == 9


def test_a_dotenv_file_in_the_working_directory_is_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("FIGWAY_MAX_LEVELS=4\nFIGWAY_EMBEDDED_WORKERS=2\n")
    assert Settings().max_levels == 4
    monkeypatch.setenv("FIGWAY_MAX_LEVELS", "6")
    settings = Settings()
    assert settings.max_levels == 6  # the environment wins over .env
    assert settings.embedded_workers == 2


def test_invalid_values_are_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIGWAY_MAX_LEVELS", "0")
    with pytest.raises(ValidationError, match="max_levels"):
        Settings()


def test_every_setting_is_described() -> None:
    undescribed = [name for name, field in Settings.model_fields.items() if not field.description]
    assert undescribed == []


# -- access control: one rule, said with the setting that decided it (issue 15) ----------------


def test_access_control_is_off_only_on_the_embedded_default() -> None:
    embedded = Settings().access()
    assert not embedded.required
    assert "embedded default" in embedded.reason


@pytest.mark.parametrize(
    ("setting", "value"),
    [("FIGWAY_DATABASE_URL", "postgresql://u@db/figway"), ("FIGWAY_REDIS_URL", "redis://r:6379/0")],
)
def test_a_database_or_redis_alone_requires_keys_and_says_which(
    monkeypatch: pytest.MonkeyPatch, setting: str, value: str
) -> None:
    monkeypatch.setenv(setting, value)
    access = Settings().access()
    assert access.required
    assert setting in access.reason


def test_a_dotenv_file_cannot_turn_access_control_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("FIGWAY_AUTH=off\nFIGWAY_REDIS_URL=redis://r:6379/0\n")
    assert Settings().access().required
    (tmp_path / ".env").write_text("FIGWAY_AUTH=on\n")
    assert Settings().access() == Settings(auth="on").access()
    assert Settings().access().required  # on from .env is honoured
    monkeypatch.setenv("FIGWAY_AUTH", "off")
    monkeypatch.setenv("FIGWAY_REDIS_URL", "redis://r:6379/0")
    off = Settings().access()
    assert (off.required, off.reason) == (False, "FIGWAY_AUTH=off")
