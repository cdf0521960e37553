"""The registry benchmark checks, after seeding, that every model's summary is its own (the check
that would have caught GetModel answering with another model's latest version)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import grpc
import pytest

from trainforge.v1 import registry_pb2_grpc

pytestmark = [pytest.mark.postgres]

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "registry_load.py"


@pytest.fixture(scope="module")
def registry_load():
    spec = importlib.util.spec_from_file_location("registry_load_under_test", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_interleaved_keeps_each_models_order_and_alternates(registry_load):
    plan = registry_load.seed_plan(3)
    order = [(v.name[-1], v.version) for v in registry_load.interleaved(plan)]
    assert order == [("0", "1.0.0"), ("1", "1.0.0"), ("2", "1.0.0"), ("0", "1.1.0"), ("1", "1.1.0"),
                     ("2", "1.1.0"), ("0", "1.2.0"), ("1", "1.2.0"), ("2", "1.2.0")]


def test_seeding_checks_every_model_summary(registry_load, grpc_server, api_keys):
    plan = registry_load.seed_plan(5)
    token = api_keys["admin"]
    # Seeding runs check_model_summaries itself and raises if any model's summary is wrong.
    assert registry_load.seed_trainforge(grpc_server.port, token, plan) >= 0
    auth = (("authorization", f"Bearer {token}"),)
    with grpc.insecure_channel(f"127.0.0.1:{grpc_server.port}") as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        production = {v.name: {"production": "1.0.0"} for v in plan}
        registry_load.check_model_summaries(stub, plan, production, auth)
        # ...and the check is not vacuous: a wrong expectation is reported.
        with pytest.raises(RuntimeError, match="wrong model summaries"):
            registry_load.check_model_summaries(stub, plan, {}, auth)
