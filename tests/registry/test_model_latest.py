"""A model's summary (latest version, version count, aliases) is its own, whatever order versions of
many models were registered in: checked over gRPC and as REST through Envoy, for GetModel and
ListModels alike."""

from __future__ import annotations

import random
import uuid

import pytest

from trainforge.v1 import registry_pb2 as pb

pytestmark = [pytest.mark.postgres]

MODELS = 12


@pytest.fixture(scope="module")
def interleaved(registry) -> dict[str, dict]:
    """MODELS models with 1-4 versions each, registered in a shuffled order (fixed seed), aliases
    on some of them. Returns, per model name, what its summary must say."""
    rng = random.Random(9)
    tag = uuid.uuid4().hex[:8]
    counts = {f"latest-{tag}-{i:02d}": rng.randint(1, 4) for i in range(MODELS)}
    # Each model's versions stay in order; the models take turns at random.
    turns = [name for name, n in counts.items() for _ in range(n)]
    rng.shuffle(turns)
    registered: dict[str, list[str]] = {name: [] for name in counts}
    for name in turns:
        version = f"1.{len(registered[name])}.0"
        registry.RegisterModel(pb.RegisterModelRequest(model_version=pb.ModelVersion(
            name=name, version=version, model_type="fine_tuned", description=f"{name} {version}")))
        registered[name].append(version)
    expected = {}
    for name, versions in registered.items():
        aliases = {}
        if rng.random() < 0.5:
            aliases["production"] = rng.choice(versions)
        if rng.random() < 0.3:
            aliases["staging"] = versions[0]
        for alias, version in aliases.items():
            registry.SetModelAlias(pb.SetModelAliasRequest(model_id=name, alias=alias, version=version))
        expected[name] = {"latest": versions[-1], "count": len(versions), "aliases": aliases}
    return expected


def _check(name: str, summary: dict, want: dict) -> None:
    assert summary["name"] == name
    assert summary["latest_version"] == want["latest"], (name, summary["latest_version"], want)
    assert summary["latest"]["name"] == name, (name, summary["latest"]["name"])
    assert summary["latest"]["version"] == want["latest"]
    assert summary["latest"]["model_id"] == summary["model_id"]
    assert int(summary["version_count"]) == want["count"]
    assert dict(summary["aliases"]) == want["aliases"]


def _from_proto(model: pb.Model) -> dict:
    return {"name": model.name, "model_id": model.model_id, "latest_version": model.latest_version,
            "version_count": model.version_count, "aliases": dict(model.aliases),
            "latest": {"name": model.latest.name, "version": model.latest.version, "model_id": model.latest.model_id}}


def test_get_model_summarises_its_own_versions_over_grpc(registry, interleaved):
    for name, want in interleaved.items():
        _check(name, _from_proto(registry.GetModel(pb.GetModelRequest(model_id=name)).data), want)
        # By id as well as by name: both lookups share the query.
        model_id = registry.GetModel(pb.GetModelRequest(model_id=name)).data.model_id
        _check(name, _from_proto(registry.GetModel(pb.GetModelRequest(model_id=model_id)).data), want)


def test_list_models_summarises_each_model_over_grpc(registry, interleaved):
    seen, token = {}, ""
    while True:
        page = registry.ListModels(pb.ListModelsRequest(page_size=7, page_token=token))
        seen.update({m.name: _from_proto(m) for m in page.data if m.name in interleaved})
        token = page.next_page_token
        if not token:
            break
    assert set(seen) == set(interleaved)
    for name, want in interleaved.items():
        _check(name, seen[name], want)


@pytest.mark.envoy
def test_get_and_list_models_summarise_each_model_over_rest(rest, interleaved):
    for name, want in interleaved.items():
        reply = rest.get(f"/api/training/models/{name}")
        assert reply.status == 200, reply
        _check(name, {"aliases": {}, **reply.body["data"]}, want)
    seen, token = {}, ""
    while True:
        reply = rest.get(f"/api/training/models?page_size=9&page_token={token}")
        assert reply.status == 200, reply
        seen.update({m["name"]: {"aliases": {}, **m} for m in reply.body["data"] if m["name"] in interleaved})
        token = reply.body.get("next_page_token", "")
        if not token:
            break
    assert set(seen) == set(interleaved)
    for name, want in interleaved.items():
        _check(name, seen[name], want)
