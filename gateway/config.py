"""figway's settings: environment variables prefixed ``FIGWAY_`` (and a ``.env`` file).

With none set, figway runs on its embedded default: SQLite under
``FIGWAY_DATA_DIR``, an in-process Redis stand-in and in-process RQ workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from backends.model.backend_names import LEGACY_BACKEND, BackendName
from backends.runtime.bootstrap import RuntimeSettings

__all__ = ["AccessDecision", "Settings", "get_settings"]


@dataclass(frozen=True)
class AccessDecision:
    """Whether API keys are required, and which setting decided it (said at start-up)."""

    required: bool
    reason: str


class _DotEnvWithoutAuthOff(DotEnvSettingsSource):
    """A ``.env`` file may turn access control on, never off: a stray file left in a
    working directory must not open a production gateway. Off is set in the process
    environment, on purpose (``FIGWAY_AUTH=off``)."""

    def __call__(self) -> dict[str, Any]:
        values = super().__call__()
        if str(values.get("auth", "")).lower() == "off":
            del values["auth"]
        return values


class Settings(RuntimeSettings):
    """Everything the gateway reads; the worker-side part is :class:`RuntimeSettings`."""

    model_config = SettingsConfigDict(env_prefix="FIGWAY_", env_file=".env", extra="ignore")

    redis_url: str | None = Field(
        default=None,
        description="Redis for the RQ backend, e.g. redis://127.0.0.1:6379/0. Unset: an "
        "in-process stand-in with in-process workers (the embedded default).",
    )
    prefect_api_url: str | None = Field(
        default=None,
        validation_alias="PREFECT_API_URL",
        description="PREFECT_API_URL (Prefect's own variable): the Prefect server runs go to. "
        "Unset: flows run in-process on Prefect's ephemeral API (the embedded default).",
    )
    prefect_early_start: bool = Field(
        default=True,
        description="Without PREFECT_API_URL: start Prefect's ephemeral API in the background "
        "when the gateway starts (false: when the first run goes to Prefect).",
    )
    auto_migrate: bool | None = Field(
        default=None,
        description="Migrate the database at start-up. Unset: yes for the embedded SQLite "
        "file, no for a configured database (run `figway db upgrade`).",
    )
    max_levels: int = Field(default=20, ge=1, le=1_000, description="Deepest DAG accepted.")
    max_nodes: int = Field(
        default=500, ge=1, le=1_000, description="Most nodes a workflow may have (422 past it)."
    )
    max_query_chars: int = Field(
        default=262_144,
        ge=1,
        description="Most characters of query text (every node's `query` together) a workflow "
        "may hold; past it, 422 before any query is parsed.",
    )
    max_definition_bytes: int = Field(
        default=1_048_576,
        gt=0,
        description="Largest workflow definition (its JSON body) PUT /workflows accepts; a "
        "larger one gets 413. FIGWAY_MAX_BODY_BYTES caps every body before this.",
    )
    default_backend: BackendName = Field(
        default=LEGACY_BACKEND,
        description="Backend for every run when there is no routing rules file at all.",
    )
    routing_rules: Path | None = Field(
        default=None,
        description="The routing rules file. Unset: ./routing_rules.yaml if it exists, "
        "else every run goes to FIGWAY_DEFAULT_BACKEND.",
    )
    routing_reload_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often the rules file is checked for changes (and guard trips and "
        "shadow results are picked up).",
    )
    guard_interval_seconds: float = Field(
        default=30.0, gt=0, description="How often each rule's guard is evaluated."
    )
    metrics_fold_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often the gateway holding the metrics lease adds finished runs to "
        "the totals /metrics exports.",
    )
    metrics_lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How long the metrics lease lasts unrenewed: another gateway takes over "
        "the ledger this long after its holder stopped.",
    )
    backend_check_seconds: float = Field(
        default=15.0,
        gt=0,
        description="How often each backend's health is checked for figway_backend_up.",
    )
    embedded_workers: int = Field(
        default=4, ge=1, le=64, description="RQ worker threads in the embedded default."
    )
    node_silence_seconds: float = Field(
        default=15.0,
        gt=0,
        description="A running node silent this long is checked with its backend.",
    )
    rq_worker_silence_seconds: float = Field(
        default=60.0, gt=0, description="An RQ worker silent this long is taken for dead."
    )
    reconcile_interval_seconds: float = Field(
        default=5.0, gt=0, description="How often the gateway looks for lost and stuck runs."
    )
    submit_claim_seconds: float = Field(
        default=30.0, gt=0, description="How long one request may hold a run it is submitting."
    )
    job_timeout_seconds: int = Field(
        default=6 * 3_600, gt=0, description="RQ kills a node attempt running longer than this."
    )
    rq_release: Literal["figway", "rq"] = Field(
        default="figway",
        description="Who starts an RQ node once its upstream nodes succeeded: `figway` (the "
        "finishing job enqueues it; a run is submitted with its root nodes' jobs) or `rq` "
        "(every job enqueued at submission, waiting with RQ's depends_on).",
    )
    artifact_retention_hours: float = Field(
        default=7 * 24,
        gt=0,
        description="Node outputs (tables) of a run are removed from the artifact store this "
        "long after the run finished.",
    )
    run_retention_days: float | None = Field(
        default=None,
        ge=1,
        description="Delete a run's records (its nodes, journal and log lines) this long after "
        "it ended, once its artifacts are removed and the metrics counted it. Unset: keep "
        "every run. Keep it longer than any window you compare or guard on.",
    )
    auth: Literal["on", "off"] | None = Field(
        default=None,
        description="API keys (`figway keys create`): `on` requires one on every route but "
        "/healthz and /readyz, `off` requires none. Unset: on with a configured database "
        "(production), off on the embedded default.",
    )
    metrics_require_key: bool = Field(
        default=True,
        description="With access control on, /metrics requires a key (any scope; a `metrics` "
        "key can do nothing else). false: /metrics is open to anyone reaching the port.",
    )
    api_docs_open: bool = Field(
        default=False,
        description="With access control on, /docs, /redoc and /openapi.json answer without a "
        "key. Unset: they need a key (any scope), like every route but the health checks.",
    )
    live_ticket_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3_600,
        description="How long a ticket from POST /live/tickets may wait before it opens its "
        "WebSocket (it opens one, once).",
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        gt=0,
        description="Largest request body accepted; a larger one gets 413.",
    )
    rate_limit_per_minute: int = Field(
        default=600,
        ge=0,
        description="Requests each API key may make per minute (bursts up to as many), per "
        "gateway; past it, 429 with Retry-After. 0: no limit. Applies with FIGWAY_AUTH on.",
    )
    address_rate_limit_per_minute: int = Field(
        default=1_200,
        ge=0,
        description="Requests each client address may make per minute (bursts up to as many), "
        "per gateway, counted before its key is looked up; a refused key counts 10. Past it, "
        "429 with Retry-After. 0: no limit. Applies with FIGWAY_AUTH on.",
    )
    key_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        le=5,
        description="How long a verified key is remembered by a gateway (at most 5 s): a revoked "
        "key is refused within this long. 0: every request looks its key up.",
    )
    live_followers_per_key: int = Field(
        default=100,
        ge=1,
        description="WebSocket clients one key may have following runs at once, per gateway; "
        "past it a new one is closed with 1013.",
    )
    live_followers_max: int = Field(
        default=2_000,
        ge=1,
        description="WebSocket clients following runs on one gateway (both ports); past it a "
        "new one is closed with 1013.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins (https://app.example.com) whose browser pages may call the API. "
        "Unset: none (CORS closed).",
    )
    live_poll_seconds: float = Field(
        default=0.5,
        gt=0,
        description="How often the live feed (WebSocket status updates) reads the journal "
        "when nothing woke it: always on SQLite; on PostgreSQL, notifications wake it at "
        "once and this is the fallback.",
    )
    artifact_cleanup_seconds: float = Field(
        default=600.0, gt=0, description="How often expired node outputs are looked for."
    )

    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="With access control off, the Host names (besides loopback ones) the "
        "gateway answers; a request naming any other host gets 421. Needed only with "
        "--insecure-no-auth on a non-loopback interface.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if isinstance(dotenv_settings, DotEnvSettingsSource):
            dotenv_settings = _DotEnvWithoutAuthOff(
                settings_cls,
                env_file=dotenv_settings.env_file,
                env_file_encoding=dotenv_settings.env_file_encoding,
            )
        return init_settings, env_settings, dotenv_settings, file_secret_settings

    @property
    def production_backing(self) -> bool:
        """A configured database or Redis: this gateway serves more than one developer."""
        return self.database_url is not None or self.redis_url is not None

    def access(self) -> AccessDecision:
        """The one rule that decides access control, with the setting that decided it."""
        if self.auth is not None:
            return AccessDecision(self.auth == "on", f"FIGWAY_AUTH={self.auth}")
        if self.production_backing:
            backing = "FIGWAY_DATABASE_URL" if self.database_url else "FIGWAY_REDIS_URL"
            return AccessDecision(
                True,
                f"{backing} is set (production); FIGWAY_AUTH=off in the environment turns it off",
            )
        return AccessDecision(False, "the embedded default (no database or Redis configured)")

    @property
    def auth_required(self) -> bool:
        return self.access().required

    @property
    def embedded(self) -> bool:
        """True when figway runs its RQ backend in-process (no Redis configured)."""
        return self.redis_url is None

    def should_auto_migrate(self) -> bool:
        if self.auto_migrate is not None:
            return self.auto_migrate
        return self.database_url is None


def get_settings(**overrides: object) -> Settings:
    """Settings from the environment, with ``overrides`` on top (for tests and the CLI)."""
    return Settings(**overrides)  # type: ignore[arg-type]
