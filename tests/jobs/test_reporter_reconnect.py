"""The training process's reporter keeps the job alive through a lost database connection
(PostgreSQL restarted, a backend terminated): it reconnects and writes again, each event once. Before,
the first write after `pg_ctl restart` raised AdminShutdown and the job ended FAILED."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from trainforge.core.jobs.reporter import LeaseLost, PostgresReporter

pytestmark = pytest.mark.postgres


def _running_job(dsn: str, attempt: int = 1) -> str:
    job_id = str(uuid.uuid4())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO jobs (id, name, spec, state, attempt) VALUES (%s, 'reconnect', '{}', 'RUNNING', %s)",
                      (job_id, attempt))
    return job_id


def _terminate(dsn: str, reporter: PostgresReporter) -> None:
    with psycopg.connect(dsn, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (reporter.conn.info.backend_pid,)).fetchone()[0]


def test_reporter_reconnects_after_its_connection_is_terminated(database_url):
    job_id = _running_job(database_url)
    reporter = PostgresReporter(job_id, database_url, attempt=1)
    try:
        reporter.progress(1, 10, 0, 1, {"loss": 2.0})
        _terminate(database_url, reporter)
        reporter.evaluation(2, {"eval_loss": 1.5})  # the write that used to fail the job
        _terminate(database_url, reporter)
        reporter._last_flags = 0.0  # flags are read at most once a second
        assert reporter.should_stop() is None
        _terminate(database_url, reporter)
        reporter.checkpoint(3, 0, "/nonexistent", {"loss": 1.0}, is_best=True)
    finally:
        reporter.close()
    with psycopg.connect(database_url) as conn:
        events = conn.execute("SELECT seq, type FROM job_events WHERE job_id = %s ORDER BY seq", (job_id,)).fetchall()
        checkpoints = conn.execute("SELECT step FROM job_checkpoints WHERE job_id = %s", (job_id,)).fetchall()
    assert events == [(1, "PROGRESS"), (2, "EVALUATION"), (3, "CHECKPOINT")]  # each once, no gap
    assert checkpoints == [(3,)]


def test_reconnecting_reporter_is_still_fenced(database_url):
    job_id = _running_job(database_url)
    reporter = PostgresReporter(job_id, database_url, attempt=1)
    try:
        _terminate(database_url, reporter)
        with psycopg.connect(database_url, autocommit=True) as conn:  # another worker claimed the job
            conn.execute("UPDATE jobs SET attempt = 2 WHERE id = %s", (job_id,))
        with pytest.raises(LeaseLost):
            reporter.evaluation(1, {"eval_loss": 1.0})
    finally:
        reporter.close()
