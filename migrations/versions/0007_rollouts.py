"""rollouts: where each rule's rollout in steps stands, and every move it made

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import backends.store.models

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("rule_id", sa.String(length=128), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("percent", sa.Float(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column(
            "step_started_at", backends.store.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("updated_at", backends.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("rule_id", name=op.f("pk_rollouts")),
    )
    op.create_table(
        "rollout_events",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("rule_id", sa.String(length=128), nullable=False),
        sa.Column("at", backends.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("from_percent", sa.Float(), nullable=True),
        sa.Column("to_percent", sa.Float(), nullable=True),
        sa.Column("by", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollout_events")),
    )
    op.create_index(
        op.f("ix_rollout_events_rule_id_id"), "rollout_events", ["rule_id", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_rollout_events_rule_id_id"), table_name="rollout_events")
    op.drop_table("rollout_events")
    op.drop_table("rollouts")
