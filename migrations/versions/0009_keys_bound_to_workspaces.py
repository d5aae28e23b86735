"""keys bound to workspaces; one-use tickets that open a WebSocket without the key

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import backends.store.models

revision = "0009"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.add_column(sa.Column("workspaces", sa.Text(), nullable=True))
    op.create_table(
        "live_tickets",
        sa.Column("ticket_hash", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("expires_at", backends.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("ticket_hash", name=op.f("pk_live_tickets")),
    )
    with op.batch_alter_table("live_tickets") as batch_op:
        batch_op.create_index(
            batch_op.f("ix_live_tickets_expires_at"), ["expires_at"], unique=False
        )


def downgrade() -> None:
    op.drop_table("live_tickets")
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.drop_column("workspaces")
