"""Access control and audit: API keys (stored as sha256 of the secret, never the secret) and an
append-only audit log whose rows each carry the sha256 of the previous row.

Revision ID: 0002_access
Revises: 0001_registry
"""

from alembic import op

revision = "0002_access"
down_revision = "0001_registry"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE api_keys (
            id              text PRIMARY KEY,
            secret_sha256   text NOT NULL,
            owner           text NOT NULL,
            role            text NOT NULL CHECK (role IN ('viewer', 'trainer', 'admin')),
            description     text NOT NULL DEFAULT '',
            create_time     timestamptz NOT NULL DEFAULT now(),
            expire_time     timestamptz,
            last_used_time  timestamptz,
            revoke_time     timestamptz
        );

        CREATE TABLE audit_log (
            seq          bigint PRIMARY KEY,
            time         timestamptz NOT NULL,
            key_id       text NOT NULL,
            role         text NOT NULL,
            rpc          text NOT NULL,
            resource     text NOT NULL,
            request_id   text NOT NULL,
            outcome      text NOT NULL,
            client       text NOT NULL,
            prev_hash    text NOT NULL,
            hash         text NOT NULL
        );
        CREATE INDEX audit_log_resource_idx ON audit_log (resource, seq);
        CREATE INDEX audit_log_key_idx ON audit_log (key_id, seq);
        CREATE INDEX audit_log_time_idx ON audit_log (time);

        -- Appends are serialised on this single row: it holds the chain's head (last seq and hash).
        CREATE TABLE audit_head (
            id        boolean PRIMARY KEY DEFAULT true CHECK (id),
            seq       bigint NOT NULL,
            hash      text NOT NULL
        );
        INSERT INTO audit_head (seq, hash) VALUES (0, repeat('0', 64));

        -- Append-only for the service: rows cannot be changed through ordinary statements. (A
        -- superuser can still drop the trigger; `trainforge audit verify` catches what that hides.)
        CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit_log is append-only';
        END $$;
        CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
            FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE audit_head, audit_log, api_keys; DROP FUNCTION audit_log_append_only()")
