"""routing records: why each run went where it did, rules versions, guard trips, shadows

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import backends.store.models

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "guard_trips",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("rule_id", sa.String(length=128), nullable=False),
        sa.Column("rules_version", sa.String(length=64), nullable=False),
        sa.Column("tripped_at", backends.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.Column("reset_at", backends.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("reset_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guard_trips")),
    )
    with op.batch_alter_table("guard_trips", schema=None) as batch_op:
        batch_op.create_index(
            "uq_guard_trips_rule_in_force",
            ["rule_id"],
            unique=True,
            postgresql_where=sa.text("reset_at IS NULL"),
            sqlite_where=sa.text("reset_at IS NULL"),
        )

    op.create_table(
        "rules_versions",
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("phase", sa.Integer(), nullable=False),
        sa.Column(
            "first_applied_at", backends.store.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("content_hash", name=op.f("pk_rules_versions")),
    )
    op.create_table(
        "rules_applied",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=500), nullable=False),
        sa.Column("applied_at", backends.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["content_hash"],
            ["rules_versions.content_hash"],
            name=op.f("fk_rules_applied_content_hash_rules_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rules_applied")),
    )
    with op.batch_alter_table("rules_applied", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_rules_applied_applied_at"), ["applied_at"], unique=False
        )

    op.create_table(
        "shadow_comparisons",
        sa.Column("job_run_id", sa.String(length=128), nullable=False),
        sa.Column("shadow_run_id", sa.String(length=128), nullable=False),
        sa.Column("workflow_id", sa.String(length=128), nullable=False),
        sa.Column("primary_backend", sa.String(length=32), nullable=False),
        sa.Column("shadow_backend", sa.String(length=32), nullable=False),
        sa.Column("matched", sa.Boolean(), nullable=False),
        sa.Column("mismatches", sa.JSON(), nullable=False),
        sa.Column("compared_at", backends.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_run_id"],
            ["runs.job_run_id"],
            name=op.f("fk_shadow_comparisons_job_run_id_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_run_id", name=op.f("pk_shadow_comparisons")),
    )
    with op.batch_alter_table("shadow_comparisons", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_shadow_comparisons_compared_at"), ["compared_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_shadow_comparisons_workflow_id"), ["workflow_id"], unique=False
        )

    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("route_rule", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("route_version", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("route_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("shadow_of", sa.String(length=128), nullable=True))
        batch_op.create_index(batch_op.f("ix_runs_shadow_of"), ["shadow_of"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_runs_route_rule_created_at"), ["route_rule", "created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_runs_workflow_id_finished_at"),
            ["workflow_id", "finished_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runs_workflow_id_finished_at"))
        batch_op.drop_index(batch_op.f("ix_runs_route_rule_created_at"))
        batch_op.drop_index(batch_op.f("ix_runs_shadow_of"))
        batch_op.drop_column("shadow_of")
        batch_op.drop_column("route_reason")
        batch_op.drop_column("route_version")
        batch_op.drop_column("route_rule")

    with op.batch_alter_table("shadow_comparisons", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_shadow_comparisons_workflow_id"))
        batch_op.drop_index(batch_op.f("ix_shadow_comparisons_compared_at"))

    op.drop_table("shadow_comparisons")
    with op.batch_alter_table("rules_applied", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rules_applied_applied_at"))

    op.drop_table("rules_applied")
    op.drop_table("rules_versions")
    with op.batch_alter_table("guard_trips", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_guard_trips_rule_in_force",
            postgresql_where=sa.text("reset_at IS NULL"),
            sqlite_where=sa.text("reset_at IS NULL"),
        )

    op.drop_table("guard_trips")
