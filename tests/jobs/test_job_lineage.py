"""A job-registered version's lineage keeps the job spec with paths relative to their roots."""

from __future__ import annotations

from trainforge.core.jobs.job_lineage import portable_path, portable_spec


def test_paths_become_relative_to_their_roots(tmp_path):
    data, models = tmp_path / "training-data", tmp_path / "models"
    spec = {
        "name": "m", "model": str(models / "team" / "base"), "tags": ["/not-a-path"],
        "training_data": {"path": str(data / "sub" / "qa.jsonl"), "format": "jsonl"},
        "distributed": {"hostfile": "/etc/trainforge/hosts"},
        "resolved": {"data_path": str(data / "sub" / "qa.jsonl"), "dataset_bytes": 10, "model_source": "local",
                     "model_path": str(models / "team" / "base"), "models_root": str(models),
                     "hostfile_path": "/etc/trainforge/hosts", "cache": str(tmp_path / "cache" / "abc")},
    }
    out = portable_spec(spec, data_root=data, models_root=models)
    assert out["model"] == "team/base" and out["training_data"]["path"] == "sub/qa.jsonl"
    assert out["distributed"]["hostfile"] == "hosts"
    assert out["tags"] == ["/not-a-path"]  # free text is not rewritten
    assert out["resolved"] == {"data_path": "sub/qa.jsonl", "dataset_bytes": 10, "model_source": "local",
                               "model_path": "team/base", "hostfile_path": "hosts", "cache": "abc"}
    # The caller's spec is left as it was.
    assert spec["resolved"]["models_root"] == str(models) and spec["training_data"]["path"].startswith("/")


def test_roots_are_matched_through_symlinks_and_relative_names_are_kept(tmp_path):
    real = tmp_path / "real-data"
    (real / "x").mkdir(parents=True)
    link = tmp_path / "data-link"
    link.symlink_to(real)
    # The server was configured with the link; confine() resolved the job's path through it.
    assert portable_path(str(real / "x" / "f.jsonl"), data_root=link, models_root=None) == "x/f.jsonl"
    assert portable_path("qa.jsonl", data_root=link, models_root=None) == "qa.jsonl"
    assert portable_path("smollm2-135m", data_root=None, models_root=None) == "smollm2-135m"
    # A root inside another root: the deeper one names the path.
    assert portable_path(str(tmp_path / "models" / "m"), data_root=tmp_path, models_root=tmp_path / "models") == "m"
