"""Worker processes heartbeat into `workers` (every 5 s, idle or not) so that GetSystemHealth can
tell a queue that is draining from one that nobody serves. A process removes its row when it stops
cleanly; a killed one's row goes stale (health counts only rows seen in the last 15 s) and is
deleted by the next heartbeat of any worker an hour later.

Revision ID: 0006_worker_heartbeats
Revises: 0003_jobs
"""

from alembic import op

revision = "0006_worker_heartbeats"
down_revision = "0003_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE workers (
            id            text PRIMARY KEY,
            host          text NOT NULL,
            pid           integer NOT NULL,
            concurrency   integer NOT NULL,
            running_jobs  integer NOT NULL DEFAULT 0,
            gpus          text[] NOT NULL DEFAULT '{}',
            start_time    timestamptz NOT NULL DEFAULT now(),
            last_seen     timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX workers_last_seen_idx ON workers (last_seen);
        -- Queue depth and the oldest queued job for health, without reading every job.
        CREATE INDEX jobs_queued_idx ON jobs (queue_time) WHERE state = 'QUEUED';
        """
    )


def downgrade() -> None:
    op.execute("DROP INDEX jobs_queued_idx; DROP TABLE workers")
