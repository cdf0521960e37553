"""Every file in configs/ and gateway/envoy.yaml goes through the real code path."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from trainforge.core.errors import InvalidArgument
from trainforge.core.settings import Settings, load_settings
from trainforge.server.envoy_process import envoy_binary, render_config

ROOT = Path(__file__).resolve().parents[1]


def test_server_yaml_spells_out_the_embedded_defaults():
    from_file = load_settings(ROOT / "configs/server.yaml", env={})
    assert from_file == Settings()


def test_settings_report_every_bad_key_at_once(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"grpc_port": 70000, "log_level": "LOUD", "db_pool_min": 0, "colour": "blue"}))
    with pytest.raises(InvalidArgument) as info:
        load_settings(bad, env={})
    assert {v.field for v in info.value.violations} == {"grpc_port", "log_level", "db_pool_min", "colour"}


def test_environment_overrides_file(tmp_path):
    settings = load_settings(ROOT / "configs/server.yaml",
                             env={"TRAINFORGE_HTTP_PORT": "9000", "DATABASE_URL": "postgresql://db/x"})
    assert settings.http_port == 9000 and settings.database_url == "postgresql://db/x"


@pytest.mark.parametrize("config", ["template", "rendered"])
def test_envoy_config_validates(tmp_path, config):
    if config == "template":
        path = ROOT / "gateway/envoy.yaml"
        cwd = ROOT
    else:
        path = tmp_path / "envoy.yaml"
        path.write_text(yaml.safe_dump(render_config(grpc_address="127.0.0.1", grpc_port=50051,
                                                     http_address="127.0.0.1", http_port=18080,
                                                     admin_port=0, max_request_bytes=1 << 20)))
        cwd = tmp_path
    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path)], cwd=cwd,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


@pytest.mark.parametrize("name", ["fine_tune_template.yaml", "examples/smollm2_facts.yaml"])
def test_training_configs_load_through_the_real_path(name, tmp_path):
    from trainforge.core.training.config import load_template, validate_config

    config = load_template(ROOT / "configs" / name)
    assert config.name and config.model
    if name.startswith("examples/"):
        data_root = tmp_path / "data"
        data_root.mkdir()
        (data_root / "facts.jsonl").write_bytes((ROOT / "configs/examples/facts.jsonl").read_bytes())
        resolved = validate_config(config, data_root, tmp_path / "models")
        assert resolved.model_source == "packaged" and resolved.dataset_bytes > 0


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_deepspeed_configs_fill_in(stage):
    from trainforge.core.training.distributed import deepspeed_config

    filled = deepspeed_config(stage, micro_batch=4, accumulation=2, world_size=2, bf16=False)
    assert filled["train_batch_size"] == 16 and filled["zero_optimization"]["stage"] == stage
    if stage == 3:
        assert filled["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
