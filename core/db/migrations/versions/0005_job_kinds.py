"""Long work as kinds of job, and cancel as a state of its own.

`kind` says what a job runs (TRAINING, EVALUATION, COMPRESSION; later kinds extend the check);
`result` holds a finished job's typed result (an evaluation's metrics, a compression's report).
CANCELLING is the state between CancelJob on a running job and its worker having stopped the
job's processes; the claim and queue indexes include it because a CANCELLING job still holds a
worker (or, with an expired lease, waits for someone to notice that its worker is gone).

Revision ID: 0005_job_kinds
Revises: 0008_lifecycle
"""

from alembic import op

revision = "0005_job_kinds"
down_revision = "0008_lifecycle"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE jobs ADD COLUMN kind text NOT NULL DEFAULT 'TRAINING'
            CONSTRAINT jobs_kind_check CHECK (kind IN ('TRAINING', 'EVALUATION', 'COMPRESSION'));
        ALTER TABLE jobs ADD COLUMN result jsonb;
        ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
        ALTER TABLE jobs ADD CONSTRAINT jobs_state_check CHECK (state IN (
            'PENDING', 'QUEUED', 'RUNNING', 'CANCELLING', 'PAUSED', 'SUCCEEDED', 'FAILED', 'CANCELLED'));
        -- A running job with a cancel request was the old spelling of "cancelling".
        UPDATE jobs SET state = 'CANCELLING' WHERE state = 'RUNNING' AND cancel_requested;
        DROP INDEX jobs_claim_idx;
        CREATE INDEX jobs_claim_idx ON jobs (queue_time) WHERE state IN ('QUEUED', 'RUNNING', 'CANCELLING');
        DROP INDEX jobs_owner_running_idx;
        CREATE INDEX jobs_owner_running_idx ON jobs (owner_key_id) WHERE state IN ('QUEUED', 'RUNNING', 'CANCELLING');
        -- Per-kind concurrency limits count the running jobs of one kind at every claim.
        CREATE INDEX jobs_kind_running_idx ON jobs (kind) WHERE state IN ('RUNNING', 'CANCELLING');
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP INDEX jobs_kind_running_idx;
        UPDATE jobs SET state = 'RUNNING' WHERE state = 'CANCELLING';
        DELETE FROM jobs WHERE kind <> 'TRAINING';
        DROP INDEX jobs_owner_running_idx;
        CREATE INDEX jobs_owner_running_idx ON jobs (owner_key_id) WHERE state IN ('QUEUED', 'RUNNING');
        DROP INDEX jobs_claim_idx;
        CREATE INDEX jobs_claim_idx ON jobs (queue_time) WHERE state IN ('QUEUED', 'RUNNING');
        ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
        ALTER TABLE jobs ADD CONSTRAINT jobs_state_check CHECK (state IN (
            'PENDING', 'QUEUED', 'RUNNING', 'PAUSED', 'SUCCEEDED', 'FAILED', 'CANCELLED'));
        ALTER TABLE jobs DROP COLUMN result;
        ALTER TABLE jobs DROP COLUMN kind;
        """
    )
