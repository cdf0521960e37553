"""What a job-registered version keeps of its job's spec as lineage: the spec as the user wrote it,
with every server path named relative to its root (data root, models root), as compression
lineage names its data files. Registry readers learn which dataset and base model made a version,
not where the server keeps its directories."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

# `resolved` keys that hold a root itself: nothing in them is a version's lineage.
_ROOT_KEYS = ("models_root", "data_root", "config_root")
# The fields of a spec that name a file or folder (the rest are names, numbers and free text, left
# alone even when they start with "/": a tag is not a path).
_PATH_FIELDS = (("model",), ("training_data", "path"), ("distributed", "hostfile"))


def portable_spec(spec: Mapping[str, Any], *, data_root: Path | None, models_root: Path | None) -> dict[str, Any]:
    """`spec` with each absolute path made relative to the data or models root that holds it;
    a path under neither (a hostfile, a cache folder) keeps only its file name. The stored job
    spec's `resolved` block (written by the server, paths only) loses the roots themselves."""
    roots = _roots(data_root, models_root)
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in spec.items()}
    for keys in _PATH_FIELDS:
        holder = out
        for key in keys[:-1]:
            holder = holder.get(key) if isinstance(holder.get(key), dict) else {}
        if isinstance(holder.get(keys[-1]), str):
            holder[keys[-1]] = _rewrite(holder[keys[-1]], roots)
    if isinstance(out.get("resolved"), dict):
        out["resolved"] = {k: _rewrite(v, roots) for k, v in out["resolved"].items() if k not in _ROOT_KEYS}
    return out


def portable_path(value: str, *, data_root: Path | None, models_root: Path | None) -> str:
    """One string as portable_spec writes it: unchanged unless it is an absolute path."""
    return _rewrite(value, _roots(data_root, models_root))


def _roots(*roots: Path | None) -> list[str]:
    """Each root as given and as its real path (a job's paths were resolved through symlinks),
    deepest first so that a root inside another one wins."""
    found = {str(p) for root in roots if root for p in (Path(root).absolute(), Path(os.path.realpath(root)))}
    return sorted(found, key=len, reverse=True)


def _rewrite(value: Any, roots: list[str]) -> Any:
    if isinstance(value, Mapping):
        return {k: _rewrite(v, roots) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rewrite(v, roots) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        return _relative(value, roots)
    return value


def _relative(path: str, roots: list[str]) -> str:
    pure = PurePath(os.path.normpath(path))
    for root in roots:
        if pure.is_relative_to(root):
            rel = pure.relative_to(root).as_posix()
            return "" if rel == "." else rel
    return pure.name
