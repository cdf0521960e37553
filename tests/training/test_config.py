"""Training configs: every violation at once with dotted paths, the YAML template through the real
loader, the seed's REST body, the JobSpec contract, and the DeepSpeed JSON files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import json_format

from tests.training.conftest import tiny_spec
from trainforge.core.errors import InvalidArgument
from trainforge.core.training import config as c
from trainforge.core.training.distributed import deepspeed_config
from trainforge.v1 import training_pb2

ROOT = Path(__file__).resolve().parents[2]

# The seed's usage example 1, verbatim (camelCase trainingData, snake_case inside).
SEED_REST_BODY = {
    "name": "my_custom_model",
    "model": "microsoft/DialoGPT-medium",
    "trainingData": {"source": "file", "path": "/app/training-data/conversations.jsonl", "format": "jsonl",
                     "validation_split": 0.1},
    "hyperparameters": {"learning_rate": 5e-5, "batch_size": 8, "epochs": 3},
}


def fields(exc: InvalidArgument) -> set[str]:
    return {v.field for v in exc.violations}


def test_every_violation_is_reported_at_once_with_dotted_paths(roots):
    data_root, models_root = roots
    (data_root.parent / "secret.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    spec = tiny_spec(name="bad name!", model="nobody/not-cached-anywhere",
                     training_data={"path": "../secret.jsonl", "validation_split": 0.7},
                     hyperparameters={"learning_rate": -1, "batch_size": 0, "learning_rat": 3},
                     optimization={"optimizer": "rmsprop", "early_stopping": {"metric": "accuracy"}},
                     distributed={"zero_stage": 4}, method="qlora")
    with pytest.raises(InvalidArgument) as info:
        c.validate_config(spec, data_root, models_root)
    assert fields(info.value) == {
        "name", "model", "training_data.path", "training_data.validation_split", "hyperparameters.learning_rate",
        "hyperparameters.batch_size", "hyperparameters.learning_rat", "optimization.optimizer",
        "optimization.early_stopping.metric", "distributed.zero_stage", "method"}
    by_field = {v.field: v.description for v in info.value.violations}
    assert "outside the allowed root" in by_field["training_data.path"]
    assert "unreachable" in by_field["model"] and "smollm2-135m" in by_field["model"]
    assert by_field["hyperparameters.learning_rat"] == "is not a known field"


def test_cross_field_rules_missing_file_and_size_limit(roots):
    data_root, models_root = roots
    spec = tiny_spec(training_data={"path": "missing.jsonl", "validation_split": 0},
                     optimization={"early_stopping": {"enabled": True}}, evaluation={"save_best_model": True},
                     distributed={"enabled": True, "strategy": "zero", "devices": [0, 1], "world_size": 3},
                     method="lora", lora={"target_modules": []})
    with pytest.raises(InvalidArgument) as info:
        c.validate_config(spec, data_root, models_root)
    assert fields(info.value) == {"training_data.path", "optimization.early_stopping.enabled",
                                  "evaluation.save_best_model", "distributed.world_size", "distributed.zero_stage",
                                  "lora.target_modules"}
    with pytest.raises(InvalidArgument) as info:
        c.validate_config(tiny_spec(training_data={"format": "csv"}), data_root, models_root, max_dataset_bytes=100)
    assert {(v.field, v.description.split(";")[-1].strip()) for v in info.value.violations} == {
        ("training_data.path", "the limit is 100 bytes"),
        ("training_data.format", "is 'csv' but the file 'qa.jsonl' looks like jsonl")}


def test_a_valid_spec_resolves_and_round_trips_through_the_stored_json(roots):
    data_root, models_root = roots
    resolved = c.validate_config(tiny_spec(), data_root, models_root)
    assert resolved.data_path == (data_root / "qa.jsonl").resolve()
    assert resolved.model_source == "local" and resolved.model_path == (models_root / "tiny").resolve()
    stored = json.loads(json.dumps(c.to_dict(resolved)))
    assert stored["hyperparameters"]["weight_decay"] == 0.01  # defaults filled in
    again = c.resolved_from_dict(stored)
    assert again.config == resolved.config and again.data_path == resolved.data_path
    assert again.model_path == resolved.model_path and again.dataset_bytes == resolved.dataset_bytes


def test_model_references_are_told_apart(roots):
    data_root, models_root = roots
    assert c.classify_model_reference("tiny", models_root)[0] == "local"
    assert c.classify_model_reference("smollm2-135m", models_root)[0] == "packaged"
    assert c.classify_model_reference("HuggingFaceTB/SmolLM2-135M-Instruct", models_root)[0] == "packaged"
    assert c.classify_model_reference("support-bot:3", models_root)[0] == "registry"
    assert c.classify_model_reference("support-bot@production", models_root)[0] == "registry"
    assert c.classify_model_reference("microsoft/DialoGPT-medium", models_root)[0] == "hub"
    assert c.classify_model_reference("../escape", models_root)[0] == "invalid"
    resolved = c.validate_config(tiny_spec(model="support-bot@production"), data_root, models_root)
    assert resolved.model_source == "registry" and resolved.model_path is None


def test_the_template_loads_through_the_real_loader(roots):
    data_root, models_root = roots
    template = c.load_template(ROOT / "configs/fine_tune_template.yaml")
    assert template.name == "custom_model_v1" and template.model == "microsoft/DialoGPT-medium"
    assert template.model_type == "fine_tuned"
    assert template.training_data.path == "/app/training-data/processed/data.jsonl"
    assert template.hyperparameters.learning_rate == 5e-5 and template.hyperparameters.warmup_steps == 100
    assert template.optimization.early_stopping.enabled and template.optimization.early_stopping.patience == 2
    assert template.evaluation.metrics == ["accuracy", "f1_score", "perplexity"]
    assert template.deployment.health_check_enabled and not template.deployment.auto_deploy
    assert template.distributed.strategy == "data_parallel" and template.world_size == 1
    # As written it names a hub model and a path outside this data root: exactly those two fail.
    with pytest.raises(InvalidArgument) as info:
        c.validate_config(template, data_root, models_root)
    assert fields(info.value) == {"model", "training_data.path"}
    fixed = template.model_copy(update={"model": "tiny",
                                        "training_data": template.training_data.model_copy(update={"path": "qa.jsonl"})})
    assert c.validate_config(fixed, data_root, models_root).config.name == "custom_model_v1"


def test_the_seed_rest_body_is_accepted_in_camel_and_snake_case():
    camel = c.from_dict(SEED_REST_BODY)
    snake = c.from_dict({**{k: v for k, v in SEED_REST_BODY.items() if k != "trainingData"},
                         "training_data": SEED_REST_BODY["trainingData"]})
    assert camel == snake
    assert camel.training_data.path == "/app/training-data/conversations.jsonl"
    assert camel.hyperparameters.epochs == 3 and camel.hyperparameters.max_seq_length == 1024
    deep_camel = c.from_dict({"name": "x", "model": "m", "trainingData": {"path": "d.jsonl", "validationSplit": 0.2},
                              "hyperparameters": {"learningRate": 1e-4, "gradientAccumulation": 4}})
    assert deep_camel.training_data.validation_split == 0.2
    assert deep_camel.hyperparameters.gradient_accumulation == 4


def _message_fields(descriptor, prefix=""):
    for f in descriptor.fields:
        yield prefix + f.name
        if f.message_type is not None and f.message_type.name != "Timestamp":
            yield from _message_fields(f.message_type, prefix + f.name + ".")


def _model_fields(model, prefix=""):
    for name, info in type(model).model_fields.items():
        yield prefix + name
        value = getattr(model, name)
        if isinstance(value, c.BaseModel):
            yield from _model_fields(value, prefix + name + ".")


def test_train_config_mirrors_the_jobspec_message():
    example = c.from_dict({"name": "x", "model": "m", "training_data": {"path": "d.jsonl"}})
    assert set(_message_fields(training_pb2.JobSpec.DESCRIPTOR)) == set(_model_fields(example))
    # A spec that travelled through gRPC (MessageToDict keeps proto names, drops defaults) parses.
    message = json_format.ParseDict(c.to_dict(example), training_pb2.JobSpec())
    assert c.from_dict(json_format.MessageToDict(message, preserving_proto_field_name=True)) == example


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_deepspeed_configs_fill_every_auto(stage):
    assert (ROOT / f"configs/deepspeed/zero{stage}.json").is_file()
    filled = deepspeed_config(stage, micro_batch=4, accumulation=2, world_size=2, bf16=False,
                              config_dir=ROOT / "configs/deepspeed")
    assert filled["train_batch_size"] == 16 and filled["gradient_accumulation_steps"] == 2
    assert filled["zero_optimization"]["stage"] == stage and filled["bf16"]["enabled"] is False
    assert "auto" not in json.dumps(filled)
    if stage == 3:  # never the empty ZeRO-3 model on save
        assert filled["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
