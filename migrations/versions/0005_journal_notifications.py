"""journal notifications: PostgreSQL notifies listening gateways of every new transition

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite has no notifications: gateways poll the journal instead
    # One notification per run per transaction: PostgreSQL folds identical ones.
    op.execute(
        """
        CREATE FUNCTION figway_notify_transition() RETURNS trigger AS $$
        BEGIN
            PERFORM pg_notify('figway_transitions', NEW.job_run_id);
            RETURN NULL;
        END;
        $$ LANGUAGE plpgsql
        """
    )
    op.execute(
        "CREATE TRIGGER figway_transitions_notify AFTER INSERT ON transitions "
        "FOR EACH ROW EXECUTE FUNCTION figway_notify_transition()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS figway_transitions_notify ON transitions")
    op.execute("DROP FUNCTION IF EXISTS figway_notify_transition()")
