"""Training jobs: the job row is the truth (state, lease, progress); events form a gap-free log per
job that WatchJob follows through LISTEN/NOTIFY; checkpoints are recorded as they are written.

Revision ID: 0003_jobs
Revises: 0002_access
"""

from alembic import op

revision = "0003_jobs"
down_revision = "0002_access"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE jobs (
            id                       uuid PRIMARY KEY,
            name                     text NOT NULL,
            spec                     jsonb NOT NULL,
            state                    text NOT NULL CHECK (state IN ('PENDING', 'QUEUED', 'RUNNING', 'PAUSED',
                                                                    'SUCCEEDED', 'FAILED', 'CANCELLED')),
            owner_key_id             text NOT NULL DEFAULT '',
            progress                 jsonb NOT NULL DEFAULT '{}',
            metrics                  jsonb NOT NULL DEFAULT '{}',
            resources                jsonb NOT NULL DEFAULT '{}',
            error                    jsonb,
            result_model_version_id  uuid,
            -- Incremented on every claim: the fencing token that keeps a stale worker's process from
            -- writing once another worker has taken the job over.
            attempt                  integer NOT NULL DEFAULT 0,
            worker_id                text,
            lease_expires            timestamptz,
            cancel_requested         boolean NOT NULL DEFAULT false,
            pause_requested          boolean NOT NULL DEFAULT false,
            last_checkpoint          text,
            event_seq                bigint NOT NULL DEFAULT 0,
            queue_time               timestamptz,
            create_time              timestamptz NOT NULL DEFAULT now(),
            start_time               timestamptz,
            end_time                 timestamptz,
            update_time              timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX jobs_claim_idx ON jobs (queue_time) WHERE state IN ('QUEUED', 'RUNNING');
        CREATE INDEX jobs_create_time_idx ON jobs (create_time DESC, id DESC);
        CREATE INDEX jobs_owner_running_idx ON jobs (owner_key_id) WHERE state IN ('QUEUED', 'RUNNING');

        CREATE TABLE job_events (
            job_id       uuid NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            seq          bigint NOT NULL,
            type         text NOT NULL,
            state        text NOT NULL,
            message      text NOT NULL DEFAULT '',
            progress     jsonb NOT NULL DEFAULT '{}',
            metrics      jsonb NOT NULL DEFAULT '{}',
            create_time  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (job_id, seq)
        );

        CREATE TABLE job_checkpoints (
            job_id       uuid NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            step         bigint NOT NULL,
            epoch        integer NOT NULL,
            path         text NOT NULL,
            size_bytes   bigint NOT NULL DEFAULT 0,
            metrics      jsonb NOT NULL DEFAULT '{}',
            is_best      boolean NOT NULL DEFAULT false,
            create_time  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (job_id, step)
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE job_checkpoints, job_events, jobs")
