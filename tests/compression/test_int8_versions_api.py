"""What a compressed (int8) version is good for, through the Envoy gateway: EvaluateModel loads it
with our Int8Linear layers and scores it like its source; a training job refuses it as a base model
(int8 weights take no gradient) at creation, naming the field, with nothing created. A registry
reference to a version that does not exist is refused the same way."""

from __future__ import annotations

import json
import shutil
import uuid

import pytest

from tests.jobs.conftest import finished_job, job_inputs, tiny_job, worker  # noqa: F401 - fixtures
from tests.support import violations
from tests.training.conftest import build_tiny_model, qa_rows

pytestmark = [pytest.mark.postgres, pytest.mark.envoy]


@pytest.fixture(scope="module")
def int8_model(rest, settings, tmp_path_factory, request):
    """A tiny Llama registered as 1.0.0 and compressed in both modes (jobs run by the module's
    worker); returns its name."""
    request.getfixturevalue("worker")
    name = f"int8-use-{uuid.uuid4().hex[:8]}"
    shutil.copytree(build_tiny_model(tmp_path_factory.mktemp("int8-use") / "tiny", hidden=64),
                    settings.models_dir / name)
    reply = rest.post("/api/training/models", {"name": name, "version": "1.0.0", "model_type": "pretrained",
                                               "source": name})
    assert reply.status == 200, reply
    for mode, target in (("w8a8_dynamic", "1.0.0-w8a8"), ("w8a16", "1.0.0-w8a16")):
        reply = rest.post(f"/api/training/models/{name}/compress",
                          {"compression_type": "quantization", "precision": "int8", "mode": mode,
                           "target_version": target, "version": "1.0.0"})
        assert reply.status == 200, reply
        assert finished_job(rest, reply.body["data"]["job_id"])["status"] == "JOB_STATE_SUCCEEDED"
    reply = rest.put(f"/api/training/models/{name}/aliases/small", {"version": "1.0.0-w8a16"})
    assert reply.status == 200, reply
    return name


@pytest.fixture(scope="module")
def eval_data(settings) -> str:
    path = settings.data_dir_root / "int8-eval.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in qa_rows(repeat=1)))
    return path.name


def _evaluate(rest, name: str, version: str, data: str) -> dict:
    reply = rest.post(f"/api/training/evaluate/{name}",
                      {"version": version, "data_path": data, "metrics": ["perplexity", "f1_score"],
                       "max_new_tokens": 4})
    assert reply.status == 200, reply
    job = finished_job(rest, reply.body["data"]["job_id"], timeout=300)
    assert job["status"] == "JOB_STATE_SUCCEEDED", job
    return job["evaluation_result"]


@pytest.mark.usefixtures("worker")
def test_evaluate_loads_int8_versions_and_scores_them_like_the_source(rest, int8_model, eval_data):
    source = _evaluate(rest, int8_model, "1.0.0", eval_data)
    assert source["metrics"]["perplexity"] > 1
    for version in ("1.0.0-w8a8", "1.0.0-w8a16"):
        result = _evaluate(rest, int8_model, version, eval_data)
        assert result["version"] == version and result["num_samples"] == source["num_samples"]
        # A random tiny model moves by well under 1% in int8 (bf16 activations included); a wrongly
        # loaded int8 weight (a missing scale, a transposed or unpacked-wrong tensor) sends a
        # vocabulary of ~100 words to perplexities in the hundreds.
        ratio = result["metrics"]["perplexity"] / source["metrics"]["perplexity"]
        assert ratio == pytest.approx(1.0, abs=0.02), (version, result["metrics"], source["metrics"])


def _total_jobs(rest) -> int:
    return int(rest.get("/api/training/jobs?page_size=1").body["total_size"])


@pytest.mark.usefixtures("job_inputs")  # the data file and tiny model tiny_job names
def test_a_job_refuses_an_int8_or_missing_registry_base_at_creation(rest, int8_model):
    before = _total_jobs(rest)
    for ref in (f"{int8_model}:1.0.0-w8a8", f"{int8_model}@small"):
        reply = rest.post("/api/training/jobs", tiny_job("from-int8", model=ref))
        assert reply.status == 400, reply
        assert "int8" in violations(reply)["model"] and "not fine-tuned" in violations(reply)["model"]
    # Reported together with the job's other violations, in one error.
    reply = rest.post("/api/training/jobs", tiny_job("from int8!", model=f"{int8_model}:1.0.0-w8a16",
                                                     hyperparameters={"learning_rate": -1}))
    assert reply.status == 400 and {"model", "name", "hyperparameters.learning_rate"} <= set(violations(reply))
    missing = rest.post("/api/training/jobs", tiny_job("from-missing", model=f"{int8_model}:9.9.9"))
    assert missing.status == 400 and "9.9.9" in violations(missing)["model"], missing
    assert _total_jobs(rest) == before
    # The floating-point source is still a valid base model.
    ok = rest.post("/api/training/jobs", tiny_job("from-source", model=f"{int8_model}:1.0.0"))
    assert ok.status == 200, ok
    assert _total_jobs(rest) == before + 1


def test_an_int8_folder_under_the_models_root_is_refused_as_a_base(rest, settings, int8_model, registry):
    from trainforge.v1 import registry_pb2 as pb

    folder = settings.models_dir / f"{int8_model}-int8-copy"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        data = b"".join(chunk.data for chunk in registry.DownloadArtifact(
            pb.DownloadArtifactRequest(model_id=int8_model, version="1.0.0-w8a8", path=name)))
        (folder / name).write_bytes(data)
    reply = rest.post("/api/training/jobs", tiny_job("from-int8-folder", model=folder.name))
    assert reply.status == 400 and "int8" in violations(reply)["model"], reply


def test_the_compression_record_names_data_relative_to_the_data_root(tmp_path):
    from trainforge.core.compression.compress_version import _compression_record

    root = tmp_path / "training-data"
    result = {"mode": "w8a8_dynamic", "format": "int-quantized", "dtype": "bfloat16", "skip": ["lm_head"],
              "max_perplexity_increase": 0.02, "gate_passed": True, "eval_data": f"{root.resolve()}/team/facts.jsonl",
              "eval_samples": 3, "source_size_bytes": 10, "size_bytes": 6, "seconds": 1.0,
              "smoothing": {"alpha": 0.5, "calibration_data": f"{root.resolve()}/team/facts.jsonl (training rows)"}}
    record = _compression_record(result, False, root)
    assert record["eval_data"] == "team/facts.jsonl"
    assert record["smoothing"]["calibration_data"] == "team/facts.jsonl (training rows)"
    assert str(tmp_path) not in json.dumps(record)
    assert _compression_record({**result, "smoothing": None, "eval_data": "heldout_text"}, True, root)[
        "eval_data"] == "heldout_text"
