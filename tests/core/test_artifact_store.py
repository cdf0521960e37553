"""The content-addressed store on its own: manifests, materialised folders, tampering."""

from __future__ import annotations

import os

import pytest

from trainforge.core.errors import DataLoss, InvalidArgument
from trainforge.core.registry.artifacts import ArtifactStore, check_relative_path, manifest_digest
from trainforge.core.registry.models import Manifest


@pytest.fixture
def tree(tmp_path):
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text('{"a": 1}')
    (src / "sub" / "weights.bin").write_bytes(os.urandom(4096))
    return src


def test_manifest_digest_names_the_tree(tmp_path, tree):
    store = ArtifactStore(tmp_path / "store")
    files = store.put_tree(tree)
    assert [f.path for f in files] == ["config.json", "sub/weights.bin"]
    assert manifest_digest(files) == manifest_digest(list(reversed(files)))
    (tree / "config.json").write_text('{"a": 2}')
    assert manifest_digest(store.put_tree(tree)) != manifest_digest(files)


def test_materialize_verifies_and_heals(tmp_path, tree):
    store = ArtifactStore(tmp_path / "store")
    files = tuple(store.put_tree(tree))
    manifest = Manifest("v", manifest_digest(files), files, sum(f.size_bytes for f in files))
    folder = store.materialize(manifest, tmp_path / "cache")
    assert (folder / "sub" / "weights.bin").read_bytes() == (tree / "sub" / "weights.bin").read_bytes()
    (folder / "config.json").write_text("edited")  # edited in place: rebuilt from the store
    assert (store.materialize(manifest, tmp_path / "cache") / "config.json").read_text() == '{"a": 1}'
    blob = store.blob_path(files[1].sha256)
    blob.write_bytes(b"corrupt")
    (folder / "config.json").write_text("edited again")
    with pytest.raises(DataLoss):
        store.materialize(manifest, tmp_path / "cache")


@pytest.mark.parametrize("path", ["../x", "/abs", "a/../b", "a//b", "./a", "", "a\\b"])
def test_relative_paths_are_checked(path):
    with pytest.raises(InvalidArgument):
        check_relative_path(path)
