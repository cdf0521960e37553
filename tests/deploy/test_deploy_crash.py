"""`kill -9` of a `trainforge worker` in the middle of a local deployment: the alias and the stable
path stay on the version that was live, the deployment's server is the supervisor's (it is not
orphaned with the worker), the next worker resumes the deploy job, and in the end exactly one
server runs per live deployment and none for anything else."""

from __future__ import annotations

import os
import signal
import subprocess

import psutil
import psycopg
import pytest

from tests.deploy.conftest import deployed, register_tiny, served_version
from tests.jobs.conftest import finished_job, wait_for
from tests.server.test_cli import TRAINFORGE

pytestmark = [pytest.mark.postgres, pytest.mark.envoy, pytest.mark.usefixtures("serving_auth")]

LOCAL = {"target": "local", "engine": "transformers", "auto_rollback": True, "health_check_timeout": 60000}
SERVER_MODULE = "trainforge.core.serving.openai_server"


def _cli_worker(dsn: str, data_dir) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": dsn, "TRAINFORGE_DATA_DIR": str(data_dir),
           "TRAINFORGE_JOB_LEASE_SECONDS": "4"}
    return subprocess.Popen([TRAINFORGE, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _servers(dsn: str) -> dict[str, int]:
    """model_version_id -> pid of every local inference server process of this database (its
    registry DSN is on its command line) running on this machine."""
    found = {}
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if SERVER_MODULE in cmdline and "--model-version-id" in cmdline and dsn in cmdline:
            found[cmdline[cmdline.index("--model-version-id") + 1]] = process.info["pid"]
    return found


def _wanted_versions(dsn: str) -> set[str]:
    """Versions with a local deployment that may have a server: in progress or live."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT model_version_id FROM deployments WHERE target = 'local' AND state IN "
                            "('PENDING', 'DEPLOYING', 'HEALTHY', 'UNHEALTHY')").fetchall()
    return {str(r[0]) for r in rows}


def _serving_record(dsn: str, deployment_id: str) -> dict:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT serving FROM deployments WHERE id = %s", (deployment_id,)).fetchone()[0]


def test_a_worker_killed_mid_deploy_leaves_no_orphan_and_no_half_switch(rest, settings, database_url, gateway,
                                                                       serving, tmp_path):
    name = "crash-deploy"
    v1 = register_tiny(rest, settings, tmp_path, name, "1.0.0", seed=11)
    v2 = register_tiny(rest, settings, tmp_path, name, "2.0.0", seed=12)
    worker = _cli_worker(database_url, settings.data_dir)
    try:
        first, job = deployed(rest, v1["model_version_id"], LOCAL)
        assert first["state"] == "DEPLOYMENT_STATE_HEALTHY", (first, job)
        reply = rest.post(f"/api/training/deploy/{v2['model_version_id']}", LOCAL)
        second = reply.body["data"]
        # Kill the worker once the new server was asked for: the job is between starting it and
        # the switch.
        wait_for(lambda: _serving_record(database_url, second["deployment_id"]).get("artifact"), timeout=120)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        assert rest.get(f"/api/training/models/{name}").body["data"]["aliases"]["production"] == "1.0.0"
        assert served_version(gateway.url, name) == f"{name}:1.0.0"
        # The new deployment's server (if it started) belongs to the supervisor, not the dead worker:
        # every server on the machine serves a live or in-progress deployment.
        assert set(_servers(database_url)) <= _wanted_versions(database_url)

        worker = _cli_worker(database_url, settings.data_dir)
        job = finished_job(rest, second["job_id"], timeout=240)
        assert job["status"] == "JOB_STATE_SUCCEEDED" and int(job["attempt"]) >= 2, job
        final = rest.get(f"/api/training/deploy/{v2['model_version_id']}/deployments/{second['deployment_id']}")
        assert final.body["data"]["state"] == "DEPLOYMENT_STATE_HEALTHY", final
        assert rest.get(f"/api/training/models/{name}").body["data"]["aliases"]["production"] == "2.0.0"
        wait_for(lambda: served_version(gateway.url, name) == f"{name}:2.0.0", timeout=30)
        # The superseded server drains and exits; one server per live deployment remains.
        wait_for(lambda: v1["model_version_id"] not in _servers(database_url), timeout=60)
        assert v2["model_version_id"] in _servers(database_url)
        assert set(_servers(database_url)) <= _wanted_versions(database_url)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
