"""One private PostgreSQL cluster for the whole test session, started through the product's own
`EmbeddedPostgres` (fast mode) so the suite never depends on a server that happens to run on the
machine. Import `postgres_cluster` from tests/conftest.py (or list this module in pytest_plugins).

    def test_something(postgres_cluster):
        dsn = postgres_cluster.new_database("registry_roundtrip")
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from trainforge.core.db.embedded import EmbeddedPostgres

# PostgreSQL truncates longer identifiers silently, which would leave the DSN naming a database
# that does not exist.
_MAX_IDENTIFIER_BYTES = 63


@dataclass(frozen=True)
class PostgresCluster:
    """The session's cluster. `dsn` is the admin DSN (superuser `postgres`, database `postgres`)."""

    dsn: str
    port: int
    data_dir: Path
    _server: EmbeddedPostgres

    def dsn_for(self, database: str) -> str:
        return self._server.dsn_for(database)

    def new_database(self, name: str) -> str:
        """Create an empty database called `name` (dropping any earlier one of that name, with
        its connections) and return its DSN."""
        if not name or len(name.encode()) > _MAX_IDENTIFIER_BYTES:
            raise ValueError(f"database name must be 1..{_MAX_IDENTIFIER_BYTES} bytes, got {name!r}")
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn_for(name)

    def __str__(self) -> str:
        return self.dsn


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    # Not pytest's tmp_path: that is 0700 root, and when the suite runs as root the cluster runs as
    # the unprivileged `postgres`/`nobody` user, which must be able to traverse to its data dir.
    base = Path(tempfile.mkdtemp(prefix="trainforge-test-pg-", dir="/tmp"))
    base.chmod(0o711)
    server = EmbeddedPostgres(base / "data", database="postgres", fast=True)
    try:
        dsn = server.start()
        yield PostgresCluster(dsn=dsn, port=server.port, data_dir=server.data_dir, _server=server)
    finally:
        try:
            server.stop(mode="immediate")  # nothing in a test cluster needs a shutdown checkpoint
        finally:
            shutil.rmtree(base, ignore_errors=True)
