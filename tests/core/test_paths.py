"""User paths are confined to their root before anything is read."""

from __future__ import annotations

import os

import pytest

from trainforge.core.errors import InvalidArgument
from trainforge.core.paths import confine


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "models"
    (root / "good" / "sub").mkdir(parents=True)
    (root / "good" / "weights.bin").write_bytes(b"x")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("s")
    (root / "escape").symlink_to(tmp_path / "outside")
    (root / "inner").symlink_to(root / "good")
    (root / "loop").symlink_to(root / "loop")
    os.mkfifo(root / "fifo")
    return root


@pytest.mark.parametrize("path", [
    "../outside", "../outside/secret", "good/../../outside", "/etc", "/etc/passwd", "escape", "escape/secret",
    "fifo", "/dev/null", "", "   ", "a\x00b", "x" * 5000, "missing", "loop", "good/./../escape",
])
def test_hostile_paths_are_refused(root, path):
    with pytest.raises(InvalidArgument) as info:
        confine(root, path, "source", kind="dir")
    assert [v.field for v in info.value.violations] == ["source"]


def test_paths_inside_the_root_resolve(root):
    assert confine(root, "good", "source", kind="dir") == (root / "good").resolve()
    assert confine(root, str(root / "good" / "sub"), "source", kind="dir") == (root / "good" / "sub").resolve()
    assert confine(root, "inner", "source", kind="dir") == (root / "good").resolve()
    assert confine(root, "good/weights.bin", "path", kind="file").name == "weights.bin"
    with pytest.raises(InvalidArgument):
        confine(root, "good", "path", kind="file")
    assert confine(root, "new/file.txt", "out", must_exist=False) == root.resolve() / "new" / "file.txt"
