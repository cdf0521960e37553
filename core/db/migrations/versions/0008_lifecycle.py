"""Worker shutdown without lost progress: a stopping worker sets `release_requested`, the training
process reads it at its next step boundary (with the cancel and pause flags), writes a checkpoint
and exits, and the worker hands the job back to the queue to resume from that checkpoint.

Revision ID: 0008_lifecycle
Revises: 0006_worker_heartbeats
"""

from alembic import op

revision = "0008_lifecycle"
down_revision = "0006_worker_heartbeats"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE jobs ADD COLUMN release_requested boolean NOT NULL DEFAULT false")


def downgrade() -> None:
    op.execute("ALTER TABLE jobs DROP COLUMN release_requested")
