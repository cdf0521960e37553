"""The built wheel holds only trainforge.*; no generic top-level `core`, `server` or `kernels`."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
                   check=True, capture_output=True, text=True, timeout=300)
    return next(out.glob("trainforge-*.whl"))


def test_wheel_contains_only_trainforge(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top <= {"trainforge", next(t for t in top if t.endswith(".dist-info"))}, top
    for expected in ("trainforge/v1/registry_pb2.py", "trainforge/v1/registry.proto",
                     "trainforge/server/app.py", "trainforge/core/registry/store.py",
                     "trainforge/core/db/migrations/versions/0001_registry.py",
                     "trainforge/core/db/migrations/script.py.mako",
                     "trainforge/kernels/__init__.py", "trainforge/gateway/envoy.yaml",
                     "trainforge/gateway/trainforge.pb", "trainforge/gateway/docs.html",
                     "trainforge/configs/deepspeed/zero3.json", "trainforge/configs/fine_tune_template.yaml",
                     "trainforge/core/training/recipe.py", "trainforge/core/jobs/worker.py"):
        assert expected in names, expected
    assert not any(n.startswith("trainforge/__init__") for n in names)  # a namespace package


def test_generic_names_are_not_importable_from_the_install():
    probe = "import importlib.util as u; print([m for m in ('core', 'server', 'kernels', 'gateway') if u.find_spec(m)])"
    out = subprocess.run([sys.executable, "-c", probe], cwd="/", capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
