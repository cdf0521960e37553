"""Disk use of jobs, through the gateway with a real worker: checkpoint retention keeps the newest
`keep_last` folders and the best one (on disk and in ListJobCheckpoints alike), and DeleteJobFiles
frees an ended job's folder while its registered version still verifies and loads."""

from __future__ import annotations

import asyncio
import json
import uuid

from tests.jobs.conftest import tiny_job, wait_for
from trainforge.core.db.pool import open_pool
from trainforge.core.registry.artifacts import ArtifactStore
from trainforge.core.registry.store import RegistryStore


def _job(rest, job_id: str) -> dict:
    reply = rest.get(f"/api/training/jobs/{job_id}")
    assert reply.status == 200, reply
    return reply.body["data"]


def _listed_steps(rest, job_id: str) -> list[int]:
    reply = rest.get(f"/api/training/jobs/{job_id}/checkpoints")
    assert reply.status == 200, reply
    return sorted(int(c["step"]) for c in reply.body.get("data", []))


def _steps_on_disk(settings, job_id: str) -> list[int]:
    folder = settings.jobs_dir / job_id / "output" / "checkpoints"
    return sorted(int(p.name.removeprefix("step-")) for p in folder.iterdir())


def _load_version(settings, database_url: str, name: str, version: str, cache) -> int:
    """Materialises the registered version from the content-addressed store and loads it."""
    from transformers import AutoModelForCausalLM

    async def materialize():
        pool = await open_pool(database_url, min_size=1, max_size=2)
        try:
            store = RegistryStore(pool, ArtifactStore(settings.artifacts_dir), settings.models_dir)
            return await store.materialize(name, version, cache)
        finally:
            await pool.close()

    model = AutoModelForCausalLM.from_pretrained(asyncio.run(materialize()))
    return sum(p.numel() for p in model.parameters())


def test_retention_keeps_the_last_k_and_the_best_on_disk_and_in_the_api(rest, worker, settings):
    name = f"keep-{uuid.uuid4().hex[:6]}"
    body = tiny_job(name, hyperparameters={"epochs": 100, "max_steps": 6, "save_steps": 1, "eval_steps": 1},
                    checkpointing={"keep_last": 2, "keep_best": True})
    created = rest.post("/api/training/jobs?start=true", body)
    assert created.status == 200, created
    job_id = created.body["data"]["job_id"]
    assert created.body["data"]["spec"]["checkpointing"] == {"keep_last": 2, "keep_best": True}
    wait_for(lambda: _job(rest, job_id)["status"] in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED"), timeout=180)
    assert _job(rest, job_id)["status"] == "JOB_STATE_SUCCEEDED", _job(rest, job_id)

    result = json.loads((settings.jobs_dir / job_id / "output" / "result.json").read_text())
    kept = {5, 6} | {result["best_step"]} - {0}  # step 0 is the baseline evaluation: no checkpoint there
    assert _steps_on_disk(settings, job_id) == sorted(kept), (result["best_step"], _steps_on_disk(settings, job_id))
    assert _listed_steps(rest, job_id) == sorted(kept)
    listed = rest.get(f"/api/training/jobs/{job_id}/checkpoints").body["data"]
    # One checkpoint is marked best (the one at the best evaluation), unless the baseline was.
    assert [int(c["step"]) for c in listed if c.get("is_best")] == ([result["best_step"]] if result["best_step"] else [])
    saved = [e for e in rest.get(f"/api/training/jobs/{job_id}/events/history?page_size=1000").body["data"]
             if e["type"] == "JOB_EVENT_TYPE_CHECKPOINT"]
    assert len(saved) == 6  # every save was recorded; the old ones were then dropped


def test_delete_job_files_only_for_ended_jobs_and_the_version_survives(rest, worker, settings, database_url,
                                                                       api_keys, tmp_path):
    name = f"files-{uuid.uuid4().hex[:6]}"
    body = tiny_job(name, hyperparameters={"epochs": 100, "max_steps": 4, "save_steps": 2, "eval_steps": 100000})
    job_id = rest.post("/api/training/jobs?start=true", body).body["data"]["job_id"]
    wait_for(lambda: _job(rest, job_id)["status"] in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED"), timeout=180)
    job = _job(rest, job_id)
    assert job["status"] == "JOB_STATE_SUCCEEDED", job
    folder = settings.jobs_dir / job_id
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    assert size > 0 and _listed_steps(rest, job_id)

    # Only the job's owner (the admin key made it) or an admin: a trainer and a viewer are refused.
    assert rest.with_token(api_keys["trainer"]).delete(f"/api/training/jobs/{job_id}/files").status == 403
    assert rest.with_token(api_keys["viewer"]).delete(f"/api/training/jobs/{job_id}/files").status == 403
    assert folder.is_dir()

    reply = rest.delete(f"/api/training/jobs/{job_id}/files")
    assert reply.status == 200, reply
    assert int(reply.body["bytes_freed"]) == size
    assert not folder.exists() and not list(settings.jobs_dir.glob(f".deleting-{job_id}"))
    assert _listed_steps(rest, job_id) == []
    history = rest.get(f"/api/training/jobs/{job_id}/events/history?page_size=1000").body["data"]
    assert f"{size} bytes freed" in history[-1]["message"]
    again = rest.delete(f"/api/training/jobs/{job_id}/files")
    assert again.status == 200 and int(again.body.get("bytes_freed", 0)) == 0

    version = f"job-{job_id[:8]}"
    verified = rest.post(f"/api/training/models/{name}/versions/{version}/verify", {})
    assert verified.status == 200 and verified.body["data"]["ok"], verified
    assert _load_version(settings, database_url, name, version, tmp_path / "cache") > 0


def test_delete_job_files_of_a_running_job_is_refused(rest, worker, settings):
    name = f"busy-{uuid.uuid4().hex[:6]}"
    body = tiny_job(name, hyperparameters={"epochs": 400, "max_steps": 4000, "save_steps": 5, "eval_steps": 100000})
    job_id = rest.post("/api/training/jobs?start=true", body).body["data"]["job_id"]
    wait_for(lambda: int(_job(rest, job_id)["progress"].get("current_step", 0)) >= 5)
    reply = rest.delete(f"/api/training/jobs/{job_id}/files")
    assert reply.status == 400 and "RUNNING" in reply.body["message"], reply
    assert (settings.jobs_dir / job_id / "output").is_dir()
    assert rest.post(f"/api/training/jobs/{job_id}/cancel", {}).status == 200
    wait_for(lambda: _job(rest, job_id)["status"] == "JOB_STATE_CANCELLED", timeout=30)
    freed = rest.delete(f"/api/training/jobs/{job_id}/files")
    assert freed.status == 200 and int(freed.body["bytes_freed"]) > 0
    assert not (settings.jobs_dir / job_id).exists()
