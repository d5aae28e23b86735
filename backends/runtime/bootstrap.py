"""How a worker process gets its node runtime.

``figway worker rq`` and the embedded gateway install one explicitly. A
process that a backend starts on its own (a Prefect worker's flow-run
process, or RQ's plain ``rq worker``) builds one on first use from the same
``FIGWAY_*`` environment variables the gateway reads.
"""

from __future__ import annotations

import threading
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from backends.artifacts import ArtifactStore
from backends.nodes import default_registry
from backends.nodes.policy import DEMO_CALLABLES, NodePolicy, split_list
from backends.runtime.attempts import NodeRuntime
from backends.runtime.bounds import DEFAULT_MAX_OUTPUT_BYTES
from backends.runtime.secrets import SecretsPolicy
from backends.store import Store, create_database_engine, ensure_migrated

__all__ = ["RuntimeSettings", "current_runtime", "install_runtime"]


class RuntimeSettings(BaseSettings):
    """The settings a worker needs: where the database is and how often to heartbeat."""

    model_config = SettingsConfigDict(env_prefix="FIGWAY_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        default=Path(".figway"), description="Where the embedded default keeps its SQLite file."
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the system of record, e.g. postgresql://user@host/db. "
        "Unset: SQLite under data_dir.",
    )
    worker_database_url: str | None = Field(
        default=None,
        description="The database URL workers use instead of FIGWAY_DATABASE_URL: a role "
        "with only what workers need (`figway db grant-worker ROLE`), so the code nodes run "
        "cannot write keys, routes or definitions. Unset: FIGWAY_DATABASE_URL.",
    )
    heartbeat_seconds: float = Field(
        default=1.0, gt=0, description="How often a running node reports it is alive."
    )
    max_output_bytes: int = Field(
        default=DEFAULT_MAX_OUTPUT_BYTES,
        ge=1_024,
        description="Largest node output (its JSON) kept in the database; a larger one is "
        "written to the artifact store and the run view holds a reference to it.",
    )
    artifact_url: str | None = Field(
        default=None,
        description="Where node outputs (Parquet tables) are stored: a directory, or an "
        "fsspec URL such as gs://bucket/figway (extra `gcs`) or s3://bucket/figway (extra "
        "`s3`). Every worker must reach it. Unset: data_dir/artifacts.",
    )
    gcs_credentials_path: Path | None = Field(
        default=None,
        validation_alias="GCS_CREDENTIALS_PATH",
        description="GCS_CREDENTIALS_PATH: the service-account key file for a gs:// "
        "artifact store. Unset: Google's application default credentials.",
    )

    python_callables: str = Field(
        default=",".join(DEMO_CALLABLES),
        description="Comma-separated globs on module:function that python nodes may call "
        "(mypkg.etl:*). os, subprocess, builtins, importlib, figway's own packages and the "
        "like match only by exact name (builtins:print). Default: figway's demo callables.",
    )
    http_allow: str = Field(
        default="",
        description="Comma-separated hosts (api.internal, *.corp.example) and networks "
        "(10.1.0.0/16) http_request nodes may reach although they are loopback, link-local, "
        "private or unique-local addresses, which are refused by default.",
    )
    db_allow: str | None = Field(
        default=None,
        description="Comma-separated host globs a database node may name in a plain "
        "connection URL. Unset: any host on the embedded default, none in production "
        "(connections are then secret: references only).",
    )

    secrets_policy: Path | None = Field(
        default=None,
        description="The secrets policy file (secrets.yaml): which workspaces may use each "
        "secret, for what (connection, http_url, http_header, bigquery_credentials) and to "
        "which hosts it may be sent. Unset: any workflow may use any secret; set: a secret "
        "it does not declare may not be used.",
    )

    node_max_response_bytes: int | None = Field(
        default=None,
        gt=0,
        description="The most an http_request node may set max_response_bytes to (422 at "
        "definition, refused again on the worker). Unset: the node type's maximum.",
    )
    node_memory_limit_mb: int | None = Field(
        default=None,
        gt=0,
        description="The most a sql_transform node may set memory_limit_mb to. Unset: the "
        "node type's maximum.",
    )
    node_threads: int | None = Field(
        default=None,
        gt=0,
        description="The most a sql_transform node may set threads to. Unset: the node "
        "type's maximum.",
    )

    node_max_memory_mb: int | None = Field(
        default=None,
        ge=16,
        description="The most a node's limits.memory_mb may be (422 at definition); also "
        "bounds FIGWAY_NODE_DEFAULT_MEMORY_MB and definitions stored before it was set. "
        "Unset: no cap.",
    )
    node_max_cpu_seconds: int | None = Field(
        default=None,
        gt=0,
        description="The most a node's limits.cpu_seconds may be (422 at definition); also "
        "bounds FIGWAY_NODE_DEFAULT_CPU_SECONDS and definitions stored before it was set. "
        "Unset: no cap.",
    )
    node_default_memory_mb: int | None = Field(
        default=None,
        ge=16,
        description="The memory (MiB) an attempt of a node that sets no limits.memory_mb may "
        "allocate beyond its worker process's own, on this worker: give each pool's workers "
        "their own value. Unset: no limit.",
    )
    node_default_cpu_seconds: int | None = Field(
        default=None,
        gt=0,
        description="The CPU time (s) an attempt of a node that sets no limits.cpu_seconds may "
        "use, on this worker: give each pool's workers their own value. Unset: no limit.",
    )

    def node_policy(self) -> NodePolicy:
        """What node configs may reach, from these settings (the same on every process)."""
        db_allow: tuple[str, ...] | None = split_list(self.db_allow)
        if not db_allow and self.database_url is None:
            db_allow = None  # the embedded default: a developer's own databases
        return NodePolicy(
            python_callables=split_list(self.python_callables) or DEMO_CALLABLES,
            http_allow=split_list(self.http_allow),
            db_allow=db_allow,
            secrets=SecretsPolicy.load(self.secrets_policy),
            max_response_bytes=self.node_max_response_bytes,
            memory_limit_mb=self.node_memory_limit_mb,
            threads=self.node_threads,
            max_memory_mb=self.node_max_memory_mb,
            max_cpu_seconds=self.node_max_cpu_seconds,
            default_memory_mb=self.node_default_memory_mb,
            default_cpu_seconds=self.node_default_cpu_seconds,
        )

    def artifact_store(self) -> ArtifactStore:
        return ArtifactStore.from_settings(
            url=self.artifact_url,
            data_dir=self.data_dir,
            gcs_credentials_path=self.gcs_credentials_path,
        )

    def worker_url(self) -> str:
        """The database a worker records into: its own role's URL when one is given."""
        return self.worker_database_url or self.resolved_database_url()

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'figway.db').resolve()}"


_lock = threading.Lock()
_runtime: NodeRuntime | None = None


def install_runtime(runtime: NodeRuntime | None) -> NodeRuntime | None:
    """Make ``runtime`` the one this process's nodes run through (None forgets it).

    Returns the runtime it replaced, so whoever installed one can put the old one back.
    """
    global _runtime
    with _lock:
        previous, _runtime = _runtime, runtime
        return previous


def current_runtime() -> NodeRuntime:
    """The installed runtime, or one built from the environment on first use."""
    global _runtime
    with _lock:
        if _runtime is None:
            settings = RuntimeSettings()
            engine = create_database_engine(settings.worker_url())
            # A worker never migrates: the gateway's `figway db upgrade` owns the schema.
            ensure_migrated(engine, auto_migrate=False)
            _runtime = NodeRuntime(
                Store(engine),
                default_registry(settings.node_policy()),
                heartbeat_seconds=settings.heartbeat_seconds,
                artifacts=settings.artifact_store(),
                max_output_bytes=settings.max_output_bytes,
            )
        return _runtime
