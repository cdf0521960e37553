"""Serving test setup: the tiny random Llama (with its ChatML template) the server tests load."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.conftest import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("serving") / "tiny-llama")
