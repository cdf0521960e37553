"""The contract: buf lint (STANDARD + COMMENTS) passes, a REST annotation on every RPC, the seed's
paths are all mapped, and the generated code matches the protos."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from google.api import annotations_pb2

from trainforge.v1 import deploy_pb2, registry_pb2, training_pb2

ROOT = Path(__file__).resolve().parents[1]
BUF = ROOT / "tests/node/node_modules/.bin/buf"
SERVICES = [d.services_by_name[n] for d, n in ((training_pb2.DESCRIPTOR, "TrainingService"),
                                                (registry_pb2.DESCRIPTOR, "RegistryService"),
                                                (deploy_pb2.DESCRIPTOR, "DeployService"))]
SEED_PATHS = {
    ("post", "/api/training/jobs"), ("get", "/api/training/jobs"), ("get", "/api/training/jobs/{job_id}"),
    ("post", "/api/training/jobs/{job_id}/start"), ("post", "/api/training/jobs/{job_id}/cancel"),
    ("post", "/api/training/models"), ("get", "/api/training/models/{model_id}"),
    ("post", "/api/training/models/search"), ("post", "/api/training/models/compare"),
    ("put", "/api/training/models/{model_id}"), ("delete", "/api/training/models/{model_id}"),
    ("post", "/api/training/synthetic-data"), ("post", "/api/training/evaluate/{model_name}"),
    ("post", "/api/training/deploy/{model_version_id}"), ("get", "/api/training/statistics"),
    ("get", "/api/training/health"), ("post", "/api/training/models/{model_id}/compress"),
    ("get", "/api/training/jobs/{job_id}/events"),
}


def http_rules():
    for service in SERVICES:
        for method in service.methods:
            options = method.GetOptions()
            rule = options.Extensions[annotations_pb2.http] if options.HasExtension(annotations_pb2.http) else None
            yield service.name, method.name, rule


def test_every_rpc_has_a_rest_mapping_and_the_seed_paths_exist():
    mapped = set()
    for service, method, rule in http_rules():
        assert rule is not None, f"{service}.{method} has no google.api.http annotation"
        verb = rule.WhichOneof("pattern")
        mapped.add((verb, getattr(rule, verb)))
    assert SEED_PATHS <= mapped, SEED_PATHS - mapped


def _image(tmp_path: Path, protos: Path) -> Path:
    import google.api
    import grpc_tools
    googleapis = Path(google.api.__path__[0]).parents[1]
    wkt = Path(grpc_tools.__file__).parent / "_proto"
    image = tmp_path / "image.binpb"
    from grpc_tools import protoc
    files = [str(p.relative_to(protos)) for p in protos.rglob("*.proto")]
    rc = protoc.main(["protoc", f"-I{protos}", f"-I{googleapis}", f"-I{wkt}", "--include_imports",
                      "--include_source_info", f"--descriptor_set_out={image}", *files])
    assert rc == 0
    return image


def _buf_lint(image: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BUF), "lint", f"{image}#format=binpb", "--path", "trainforge/v1",
                           "--config", str(ROOT / "protos/buf.yaml")], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not BUF.exists(), reason="buf is installed by scripts/bootstrap.sh (npm, tests/node)")
def test_buf_lint_passes(tmp_path):
    result = _buf_lint(_image(tmp_path, ROOT / "protos"))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not BUF.exists(), reason="buf is installed by scripts/bootstrap.sh (npm, tests/node)")
def test_buf_lint_catches_a_bad_proto(tmp_path):
    """The lint step is live: a method without comment and with a non-standard request name fails."""
    protos = tmp_path / "protos"
    shutil.copytree(ROOT / "protos/trainforge", protos / "trainforge")
    (protos / "trainforge/v1/bad.proto").write_text(
        'syntax = "proto3";\npackage trainforge.v1;\nservice BadThing { rpc Do(Req) returns (Req); }\n'
        "message Req { string Name = 1; }\n")
    result = _buf_lint(_image(tmp_path, protos))
    assert result.returncode != 0
    assert "SERVICE_SUFFIX" in result.stdout or "BadThing" in result.stdout


def test_generated_modules_match_the_protos(tmp_path):
    """Regenerating the Python modules from the protos gives the committed files byte for byte."""
    import google.api
    import grpc_tools
    from grpc_tools import protoc
    googleapis = Path(google.api.__path__[0]).parents[1]
    wkt = Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted((ROOT / "protos/trainforge/v1").glob("*.proto"))
    rc = protoc.main(["protoc", f"-I{ROOT / 'protos'}", f"-I{googleapis}", f"-I{wkt}", f"--python_out={tmp_path}",
                      f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", *map(str, protos)])
    assert rc == 0
    generated = sorted((tmp_path / "trainforge/v1").iterdir())
    assert len(generated) == 3 * len(protos)
    for path in generated:
        committed = ROOT / "protos/trainforge/v1" / path.name
        assert committed.read_bytes() == path.read_bytes(), f"{committed} is stale: run scripts/gen_protos.sh"
