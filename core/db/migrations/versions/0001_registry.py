"""Registry schema: models, versions, aliases, artifacts, usage, and deployments (whose live
rows block deletion of the versions they serve).

Revision ID: 0001_registry
Revises:
"""

from alembic import op

revision = "0001_registry"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE models (
            id           uuid PRIMARY KEY,
            name         text NOT NULL UNIQUE,
            description  text NOT NULL DEFAULT '',
            tags         text[] NOT NULL DEFAULT '{}',
            etag         text NOT NULL,
            create_time  timestamptz NOT NULL DEFAULT now(),
            update_time  timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE model_versions (
            id               uuid PRIMARY KEY,
            model_id         uuid NOT NULL REFERENCES models(id) ON DELETE CASCADE,
            version          text NOT NULL,
            description      text NOT NULL DEFAULT '',
            model_type       text NOT NULL DEFAULT '',
            size_mb          double precision NOT NULL DEFAULT 0,
            parameter_count  bigint NOT NULL DEFAULT 0,
            architecture     jsonb NOT NULL DEFAULT '{}',
            metrics          jsonb NOT NULL DEFAULT '{}',
            tags             text[] NOT NULL DEFAULT '{}',
            lineage          jsonb NOT NULL DEFAULT '{}',
            source           text NOT NULL DEFAULT '',
            changelog        text NOT NULL DEFAULT '',
            manifest_digest  text NOT NULL DEFAULT '',
            artifact_count   integer NOT NULL DEFAULT 0,
            artifact_bytes   bigint NOT NULL DEFAULT 0,
            etag             text NOT NULL,
            create_time      timestamptz NOT NULL DEFAULT now(),
            update_time      timestamptz NOT NULL DEFAULT now(),
            -- The database, not a read-then-write, makes two concurrent registrations of the
            -- same name and version end in one success and one ALREADY_EXISTS.
            CONSTRAINT model_versions_model_version_key UNIQUE (model_id, version)
        );
        CREATE INDEX model_versions_create_time_idx ON model_versions (create_time DESC, id DESC);
        CREATE INDEX model_versions_metrics_idx ON model_versions USING gin (metrics);
        CREATE INDEX model_versions_tags_idx ON model_versions USING gin (tags);

        CREATE TABLE model_aliases (
            model_id    uuid NOT NULL REFERENCES models(id) ON DELETE CASCADE,
            alias       text NOT NULL,
            version_id  uuid NOT NULL REFERENCES model_versions(id) ON DELETE RESTRICT,
            update_time timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (model_id, alias)
        );
        CREATE INDEX model_aliases_version_idx ON model_aliases (version_id);

        CREATE TABLE artifacts (
            version_id  uuid NOT NULL REFERENCES model_versions(id) ON DELETE CASCADE,
            path        text NOT NULL,
            sha256      text NOT NULL,
            size_bytes  bigint NOT NULL,
            PRIMARY KEY (version_id, path)
        );
        CREATE INDEX artifacts_sha256_idx ON artifacts (sha256);

        CREATE TABLE model_usage (
            version_id          uuid PRIMARY KEY REFERENCES model_versions(id) ON DELETE CASCADE,
            request_count       bigint NOT NULL DEFAULT 0,
            error_count         bigint NOT NULL DEFAULT 0,
            tokens_generated    bigint NOT NULL DEFAULT 0,
            latency_count       bigint NOT NULL DEFAULT 0,
            latency_sum_ms      double precision NOT NULL DEFAULT 0,
            -- Log-spaced latency histogram (core/registry/usage.py holds the bucket bounds).
            latency_buckets     bigint[] NOT NULL DEFAULT '{}',
            first_request_time  timestamptz,
            last_request_time   timestamptz
        );

        CREATE TABLE deployments (
            id                      uuid PRIMARY KEY,
            model_version_id        uuid NOT NULL REFERENCES model_versions(id) ON DELETE CASCADE,
            target                  text NOT NULL,
            endpoint                text NOT NULL DEFAULT '',
            state                   text NOT NULL,
            auto_rollback           boolean NOT NULL DEFAULT false,
            health_check_enabled    boolean NOT NULL DEFAULT true,
            health_check_timeout_ms integer NOT NULL DEFAULT 30000,
            deployment_tags         text[] NOT NULL DEFAULT '{}',
            previous_deployment_id  uuid REFERENCES deployments(id) ON DELETE SET NULL,
            error                   jsonb,
            create_time             timestamptz NOT NULL DEFAULT now(),
            update_time             timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX deployments_version_idx ON deployments (model_version_id, create_time DESC);
        """
    )


def downgrade() -> None:
    op.execute(
        "DROP TABLE deployments, model_usage, artifacts, model_aliases, model_versions, models"
    )
