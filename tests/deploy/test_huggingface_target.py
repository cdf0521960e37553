"""The huggingface target against the hub stand-in, driven by the real huggingface_hub client: a
tiny random Llama with its tokenizer and chat template is shipped, read back, aliased and rolled
back; bad configuration, a lost token, an unreachable host and a hub that alters a file each end in
the documented error."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import shutil
from pathlib import Path

import pytest
import yaml
from huggingface_hub import constants, hf_hub_download

from tests.standins.hf_hub_standin import HubStandin, git_blob_id
from tests.support import free_port
from tests.training.conftest import build_tiny_model
from trainforge.core.deploy.targets.base import ShipRequest
from trainforge.core.deploy.targets.huggingface import HuggingFaceTarget, model_card
from trainforge.core.errors import DataLoss, InvalidArgument, Unauthenticated, Unavailable

TOKEN = "hf_" + secrets.token_hex(16)
CARD = {"base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "datasets": ["qa.jsonl"],
        "metrics": {"eval_loss": 1.25, "perplexity": 3.49}, "tags": ["prod-candidate", "chat"],
        "lineage": {"job_id": "job-7", "parent_version": "v0", "training_data_sha256": "ab" * 32},
        "description": "A tiny test fine-tune."}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf-models")
    return {"v1": build_tiny_model(root / "v1", seed=1), "v2": build_tiny_model(root / "v2", seed=2)}


@pytest.fixture
def hub(tmp_path):
    with HubStandin(tmp_path / "hub", {TOKEN: "alice"}) as standin:
        yield standin


@pytest.fixture
def target(hub, monkeypatch) -> HuggingFaceTarget:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return HuggingFaceTarget(hub.url, "alice")


def request(model_dir: Path, version: str, **kw) -> ShipRequest:
    return ShipRequest(deployment_id=f"dep-{version}", model_name="tiny-chat", version=version,
                       model_version_id=f"mv-{version}", alias=kw.pop("alias", "production"),
                       model_dir=model_dir, card=kw.pop("card", CARD), **kw)


def ship(target: HuggingFaceTarget, req: ShipRequest):
    seen: list[tuple[str, float | None]] = []
    result = target.ship(req, lambda message, fraction: seen.append((message, fraction)))
    assert seen[-1][1] == 1.0
    return result


def test_ship_stores_every_file_with_the_sha256_sent_in_one_commit(target, hub, models, monkeypatch):
    # Deploy jobs run with HF_HUB_OFFLINE=1; the target must still reach its configured hub.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    result = ship(target, request(models["v1"], "v1"))
    assert constants.HF_HUB_OFFLINE is True  # lifted only during the target's calls

    repo = hub.repos["alice/tiny-chat"]
    commit = repo.commits[result.details["commit"]]
    assert repo.branches["main"] == commit.oid
    assert repo.commits[commit.parent].parent is None  # one commit on top of the repo's first
    assert commit.title == "trainforge: tiny-chat:v1"
    assert set(commit.files) == set(result.details["files"]) | {".gitattributes"}
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
            "generation_config.json", "README.md"} <= set(commit.files)
    for path, sent in result.details["files"].items():
        stored = hub.read("alice/tiny-chat", commit.oid, path)
        assert sha256(stored) == sent["sha256"] and len(stored) == sent["size"], path
    for name in ("model.safetensors", "config.json", "tokenizer.json", "generation_config.json", "chat_template.jinja"):
        assert hub.read("alice/tiny-chat", commit.oid, name) == (models["v1"] / name).read_bytes(), name
    assert commit.files["model.safetensors"].lfs and not commit.files["config.json"].lfs
    # transformers 5 keeps the template out of tokenizer_config.json; the repo carries it in both places.
    tokenizer_config = json.loads(hub.read("alice/tiny-chat", commit.oid, "tokenizer_config.json"))
    assert tokenizer_config["chat_template"] == (models["v1"] / "chat_template.jinja").read_text()
    assert "chat_template" not in json.loads((models["v1"] / "tokenizer_config.json").read_text())
    assert result.endpoint == f"{hub.url}/alice/tiny-chat"
    assert repo.private

    health = target.health(result, timeout_s=5)
    assert health.healthy, health.detail


def test_model_card_carries_hub_metadata_and_lineage(target, hub, models):
    result = ship(target, request(models["v1"], "v1"))
    readme = hub.read("alice/tiny-chat", result.details["commit"], "README.md").decode()
    _, front, body = readme.split("---", 2)
    meta = yaml.safe_load(front)
    assert meta["base_model"] == CARD["base_model"]
    assert meta["datasets"] == CARD["datasets"]
    assert set(CARD["tags"]) <= set(meta["tags"])
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    [index] = meta["model-index"]
    assert index["name"] == "tiny-chat"
    metrics = {m["type"]: m["value"] for r in index["results"] for m in r["metrics"]}
    assert metrics == CARD["metrics"]
    assert "## Lineage" in body and '"job_id": "job-7"' in body and "mv-v1" in body
    assert 'revision="production"' in body


def test_a_base_model_that_is_no_hub_id_stays_out_of_the_metadata(models):
    card = model_card(request(models["v1"], "v1", card={**CARD, "base_model": "/srv/models/smollm2"}), "alice/x")
    assert "base_model" not in card.data.to_dict()
    assert "- base model: `/srv/models/smollm2`" in card.text


def test_generation_config_is_written_when_the_folder_has_none(target, hub, models, tmp_path):
    folder = tmp_path / "no-gen"
    shutil.copytree(models["v1"], folder)
    (folder / "generation_config.json").unlink()
    result = ship(target, request(folder, "v1"))
    written = json.loads(hub.read("alice/tiny-chat", result.details["commit"], "generation_config.json"))
    config = json.loads((folder / "config.json").read_text())
    assert written["eos_token_id"] == config["eos_token_id"] == 3  # <|im_end|> of the tiny tokenizer
    assert written["pad_token_id"] == config["pad_token_id"] == 0
    assert "bos_token_id" not in written  # the tiny model has none; no id is invented


def test_alias_resolves_to_the_deployed_version_and_rolls_back(target, hub, models, tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # for the reader's hf_hub_download below

    def download(name: str) -> bytes:
        path = hf_hub_download("alice/tiny-chat", name, revision="production", endpoint=hub.url, token=TOKEN,
                               cache_dir=tmp_path / f"cache-{secrets.token_hex(4)}")
        return Path(path).read_bytes()

    r1 = ship(target, request(models["v1"], "v1"))
    assert "production" not in hub.repos["alice/tiny-chat"].branches  # ship moves no alias
    target.point_alias(request(models["v1"], "v1"), r1)
    assert download("config.json") == (models["v1"] / "config.json").read_bytes()
    assert download("model.safetensors") == (models["v1"] / "model.safetensors").read_bytes()

    r2 = ship(target, request(models["v2"], "v2"))
    weights = download("model.safetensors")
    assert weights == (models["v1"] / "model.safetensors").read_bytes()  # v2 shipped, alias not moved yet
    target.point_alias(request(models["v2"], "v2"), r2)
    assert download("model.safetensors") == (models["v2"] / "model.safetensors").read_bytes()
    repo = hub.repos["alice/tiny-chat"]
    assert repo.commits[repo.branches["production"]].title == "trainforge: production -> tiny-chat:v2"

    target.restore_alias("tiny-chat", "production", r1)
    assert download("model.safetensors") == (models["v1"] / "model.safetensors").read_bytes()
    assert "tiny-chat v1" in download("README.md").decode()
    assert repo.branches["main"] == r2.details["commit"]  # rollback touches the alias only
    assert target.alias_commit("tiny-chat", "production") == repo.branches["production"]
    # The alias branch holds the version's very blobs (copied server-side, not re-uploaded).
    production = repo.commits[repo.branches["production"]].files
    assert {p: e.sha256 for p, e in production.items()} == \
        {p: e.sha256 for p, e in repo.commits[r1.details["commit"]].files.items()}


def test_remove_drops_the_alias_that_serves_the_version_and_empties_main(target, hub, models):
    req = request(models["v1"], "v1")
    result = ship(target, req)
    target.point_alias(req, result)
    target.remove("tiny-chat", "production", result)
    repo = hub.repos["alice/tiny-chat"]
    assert "production" not in repo.branches
    assert set(repo.commits[repo.branches["main"]].files) == {".gitattributes"}
    assert result.details["commit"] in repo.commits  # history stays, as on any git hub


def test_missing_token_is_a_violation_naming_it_and_nothing_is_created(hub, models, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    target = HuggingFaceTarget(hub.url, "alice")
    [violation] = target.validate()
    assert violation.field == "HF_TOKEN"
    with pytest.raises(InvalidArgument) as caught:
        target.ship(request(models["v1"], "v1"), lambda *_: None)
    assert [v.field for v in caught.value.violations] == ["HF_TOKEN"]
    assert hub.repos == {} and hub.requests == []


def test_bad_configuration_names_every_field():
    target = HuggingFaceTarget("ftp://", "", token_env="TRAINFORGE_TEST_UNSET_TOKEN")
    assert {v.field for v in target.validate()} == {"huggingface_endpoint", "huggingface_namespace",
                                                     "TRAINFORGE_TEST_UNSET_TOKEN"}
    assert [v.field for v in HuggingFaceTarget("", "alice", token_env="TRAINFORGE_TEST_UNSET_TOKEN").validate()] \
        == ["huggingface_endpoint", "TRAINFORGE_TEST_UNSET_TOKEN"]


def test_the_token_never_leaves_the_authorization_header(target, hub, models, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="huggingface_hub")  # its own level is WARNING
    req = request(models["v1"], "v1")
    result = ship(target, req)
    target.point_alias(req, result)
    r2 = ship(target, request(models["v2"], "v2"))
    target.point_alias(request(models["v2"], "v2"), r2)
    target.restore_alias("tiny-chat", "production", result)
    target.health(result, 5)
    assert len(hub.requests) > 20
    for logged in hub.requests:
        assert TOKEN.encode() not in logged.body and TOKEN not in logged.url, logged.url
    assert TOKEN not in json.dumps(result.details) + json.dumps(r2.details) + result.endpoint + repr(target)
    assert TOKEN not in hub.read("alice/tiny-chat", "main", "README.md").decode()
    assert "authenticated: True" in caplog.text  # the client's per-request debug lines were captured
    assert TOKEN not in caplog.text


def test_a_refused_token_is_unauthenticated_naming_the_variable(hub, models, monkeypatch):
    wrong = "hf_" + secrets.token_hex(16)
    monkeypatch.setenv("HF_TOKEN", wrong)
    with pytest.raises(Unauthenticated) as caught:
        HuggingFaceTarget(hub.url, "alice").ship(request(models["v1"], "v1"), lambda *_: None)
    assert "HF_TOKEN" in caught.value.message and wrong not in caught.value.message
    assert hub.repos == {}


def test_unreachable_hub_is_unavailable_naming_the_host(models, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    port = free_port()  # nothing listens there
    with pytest.raises(Unavailable) as caught:
        HuggingFaceTarget(f"http://127.0.0.1:{port}", "alice").ship(request(models["v1"], "v1"), lambda *_: None)
    assert f"127.0.0.1:{port}" in caught.value.message and TOKEN not in caught.value.message


@pytest.mark.parametrize("altered", ["config.json", "model.safetensors"])
def test_a_hub_that_alters_a_file_is_data_loss_and_no_alias_moves(target, hub, models, altered):
    def alter(files):  # a regular file is checked by its git blob id, an LFS file by its sha256
        content = b'{"model_type": "llama", "altered": true}\n'
        if files[altered].lfs:
            files[altered] = hub._lfs_entry(hub._store(content + bytes(100)), len(content) + 100)
        else:
            files[altered] = hub._regular_entry(content)

    first = ship(target, request(models["v1"], "v1"))
    target.point_alias(request(models["v1"], "v1"), first)
    hub.commit_fault = alter
    with pytest.raises(DataLoss) as caught:
        target.ship(request(models["v2"], "v2"), lambda *_: None)
    assert caught.value.message.count(": hub holds") == 1 and f"{altered}: hub holds" in caught.value.message
    sent = (models["v2"] / altered).read_bytes()
    expected = sha256(sent) if altered.endswith(".safetensors") else git_blob_id(sent)
    assert f"sent {expected[:12]}" in caught.value.message
    # The alias still serves v1: the failed ship returned no result to point anything at.
    repo = hub.repos["alice/tiny-chat"]
    assert repo.branches["production"] == first.details["commit"]
