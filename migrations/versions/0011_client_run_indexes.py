"""indexes for the readers of client runs that scanned the whole runs table

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03

Found with ``make bench-scale`` (EXPLAIN on 1,000,000 finished runs): the console's
latest runs and GET /workflow_runs/stats read every row of ``runs``; the job ids of a
workflow's runs read every run of the workflow. Partial indexes on client runs (shadows
are never read by these) make the first a short index scan and the others index-only.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_CLIENT_RUNS = sa.text("shadow_of IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch_op:
        batch_op.create_index(
            "ix_runs_client_created",
            [sa.text("created_at DESC"), "job_run_id"],
            postgresql_where=_CLIENT_RUNS,
            sqlite_where=_CLIENT_RUNS,
        )
        batch_op.create_index(
            "ix_runs_client_workflow_job",
            ["workflow_id", "job_id", "created_at"],
            postgresql_where=_CLIENT_RUNS,
            sqlite_where=_CLIENT_RUNS,
        )
        batch_op.create_index(
            "ix_runs_client_counts",
            ["workflow_id", "backend", "status"],
            postgresql_where=_CLIENT_RUNS,
            sqlite_where=_CLIENT_RUNS,
        )


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_index("ix_runs_client_counts")
        batch_op.drop_index("ix_runs_client_workflow_job")
        batch_op.drop_index("ix_runs_client_created")
