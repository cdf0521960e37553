"""The embedded default PostgreSQL: real clusters from the system's initdb/pg_ctl, in fast mode,
under a private 0711 directory (pytest's own tmp_path is 0700 root, which the unprivileged cluster
user cannot traverse when the suite runs as root)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from trainforge.core.db.embedded import EmbeddedPostgres, find_postgres_bin
from trainforge.core.errors import FailedPrecondition, Unavailable

pytestmark = pytest.mark.postgres


@pytest.fixture
def base_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tf-pg-test-", dir="/tmp"))
    path.chmod(0o711)
    clusters: list[EmbeddedPostgres] = []
    yield path
    # Belt and braces: stop anything a failed test left running under this directory.
    for data_dir in path.rglob("PG_VERSION"):
        clusters.append(EmbeddedPostgres(data_dir.parent))
    for cluster in clusters:
        cluster.stop(mode="immediate")
    shutil.rmtree(path, ignore_errors=True)


def test_start_persist_restart_and_idempotent_stop(base_dir: Path) -> None:
    pg = EmbeddedPostgres(base_dir / "data", fast=True)
    dsn = pg.start()
    assert dsn == f"postgresql://postgres@127.0.0.1:{pg.port}/trainforge"
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SHOW fsync").fetchone() == ("off",)
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        conn.execute("CREATE TABLE kept (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO kept VALUES (1, 'survives a restart')")
    pg.stop()
    pg.stop()  # idempotent
    with pytest.raises(FailedPrecondition):
        pg.dsn

    again = EmbeddedPostgres(base_dir / "data", fast=True)
    try:
        with psycopg.connect(again.start()) as conn:
            assert conn.execute("SELECT note FROM kept").fetchall() == [("survives a restart",)]
    finally:
        again.stop()
    again.stop()
    EmbeddedPostgres(base_dir / "never-started").stop()  # nothing there: still a no-op


def test_two_clusters_get_different_ports_and_both_work(base_dir: Path) -> None:
    with EmbeddedPostgres(base_dir / "a", fast=True, database="alpha") as a, \
            EmbeddedPostgres(base_dir / "b", fast=True, database="beta") as b:
        assert a.port != b.port
        for cluster, name in ((a, "alpha"), (b, "beta")):
            with psycopg.connect(cluster.dsn) as conn:
                assert conn.execute("SELECT current_database()").fetchone() == (name,)

        # A fixed port that is taken fails with the server log's reason in the error.
        clash = EmbeddedPostgres(base_dir / "c", fast=True, port=a.port)
        with pytest.raises(Unavailable, match="Address already in use"):
            clash.start(timeout=20)
        clash.stop()


def test_server_left_running_by_a_previous_run_is_restarted(base_dir: Path) -> None:
    crashed = EmbeddedPostgres(base_dir / "data", fast=True)
    crashed.start()  # never stopped: as if its process had been killed
    successor = EmbeddedPostgres(base_dir / "data", fast=True)
    try:
        with psycopg.connect(successor.start()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        successor.stop()
    assert not (base_dir / "data" / "postmaster.pid").exists()


def test_long_data_dir_puts_the_socket_under_tmp(base_dir: Path) -> None:
    deep = base_dir / ("x" * 60) / ("y" * 60) / "data"  # > 107 bytes with the socket name
    with EmbeddedPostgres(deep, fast=True) as pg:
        with psycopg.connect(pg.dsn) as conn:
            socket_dir = conn.execute("SHOW unix_socket_directories").fetchone()[0]
        assert socket_dir.startswith("/tmp/trainforge-pg-")
        assert Path(socket_dir, f".s.PGSQL.{pg.port}").is_socket()
    assert not Path(socket_dir).exists()  # removed on stop


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the cluster to another user")
def test_root_names_the_directory_the_cluster_user_cannot_traverse(base_dir: Path) -> None:
    locked = base_dir / "locked"
    locked.mkdir(mode=0o700)
    with pytest.raises(Unavailable, match=str(locked)) as err:
        EmbeddedPostgres(locked / "data", fast=True).start()
    assert err.value.metadata["directory"] == str(locked)
    assert not (locked / "data").exists()


def test_find_postgres_bin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    found = find_postgres_bin()
    assert (found / "initdb").is_file() and (found / "pg_ctl").is_file()

    monkeypatch.setenv("TRAINFORGE_PG_BIN", str(tmp_path / "bogus"))
    with pytest.raises(Unavailable, match="TRAINFORGE_PG_BIN") as err:
        find_postgres_bin()
    assert str(tmp_path / "bogus") in err.value.message
    assert "apt-get install postgresql" in err.value.message
