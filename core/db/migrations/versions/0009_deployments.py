"""Deployments become real: each is worked by a job of kind DEPLOYMENT, belongs to a model and an
alias, remembers what its target needs for rollback (`details`) and, on the local target, which
server process serves it (`serving`). At most one deployment per model, target and alias is live
(HEALTHY or UNHEALTHY): the database refuses a second, so two rollouts racing cannot both win.

Revision ID: 0009_deployments
Revises: 0005_job_kinds
"""

from alembic import op

revision = "0009_deployments"
down_revision = "0005_job_kinds"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
        ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check
            CHECK (kind IN ('TRAINING', 'EVALUATION', 'COMPRESSION', 'DEPLOYMENT'));

        ALTER TABLE deployments
            ADD COLUMN model_id     uuid REFERENCES models(id) ON DELETE CASCADE,
            ADD COLUMN job_id       uuid REFERENCES jobs(id) ON DELETE SET NULL,
            ADD COLUMN alias        text NOT NULL DEFAULT 'production',
            ADD COLUMN engine       text NOT NULL DEFAULT '',
            ADD COLUMN owner_key_id text NOT NULL DEFAULT '',
            -- What the target returned from shipping (ShipResult.details): rollback's input.
            ADD COLUMN details      jsonb NOT NULL DEFAULT '{}',
            -- Local target: {artifact, engine, host, port, pid, ready, routed}.
            ADD COLUMN serving      jsonb NOT NULL DEFAULT '{}',
            ADD COLUMN last_health  jsonb;
        UPDATE deployments d SET model_id = v.model_id FROM model_versions v WHERE v.id = d.model_version_id;
        ALTER TABLE deployments ALTER COLUMN model_id SET NOT NULL;
        ALTER TABLE deployments ADD CONSTRAINT deployments_state_check CHECK (state IN (
            'PENDING', 'DEPLOYING', 'HEALTHY', 'UNHEALTHY', 'FAILED', 'ROLLED_BACK', 'SUPERSEDED', 'UNDEPLOYED'));
        CREATE UNIQUE INDEX deployments_live_idx ON deployments (model_id, target, alias)
            WHERE state IN ('HEALTHY', 'UNHEALTHY');
        CREATE INDEX deployments_active_idx ON deployments (target)
            WHERE state IN ('PENDING', 'DEPLOYING', 'HEALTHY', 'UNHEALTHY');
        CREATE INDEX deployments_list_idx ON deployments (create_time DESC, id DESC);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP INDEX deployments_list_idx;
        DROP INDEX deployments_active_idx;
        DROP INDEX deployments_live_idx;
        ALTER TABLE deployments DROP CONSTRAINT deployments_state_check;
        ALTER TABLE deployments DROP COLUMN last_health, DROP COLUMN serving, DROP COLUMN details,
            DROP COLUMN owner_key_id, DROP COLUMN engine, DROP COLUMN alias, DROP COLUMN job_id,
            DROP COLUMN model_id;
        DELETE FROM jobs WHERE kind = 'DEPLOYMENT';
        ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
        ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check
            CHECK (kind IN ('TRAINING', 'EVALUATION', 'COMPRESSION'));
        """
    )
