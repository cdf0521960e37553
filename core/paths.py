"""Paths that come from users are confined to configured roots: no `..` escape, no absolute path
elsewhere, no symlink leading out, no device files, FIFOs or sockets. Resolution happens before
anything is read or written."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from trainforge.core.errors import FieldViolation, InvalidArgument

MAX_PATH_CHARS = 4096


def confine(root: Path, user_path: str, field: str, *, kind: str = "any", must_exist: bool = True) -> Path:
    """Resolve `user_path` (relative to `root`, or absolute inside it) to a real path under `root`.

    kind: "dir", "file" (a regular file) or "any". Raises InvalidArgument naming `field`."""
    problem = _check(root, user_path, kind, must_exist)
    if isinstance(problem, str):
        raise InvalidArgument([FieldViolation(field, problem)])
    return problem


def _check(root: Path, user_path: str, kind: str, must_exist: bool) -> Path | str:
    if not user_path or not user_path.strip():
        return "must not be empty"
    if len(user_path) > MAX_PATH_CHARS:
        return f"must be at most {MAX_PATH_CHARS} characters"
    if "\x00" in user_path:
        return "must not contain NUL characters"
    root = root.resolve()
    candidate = Path(user_path)
    if not candidate.is_absolute():
        candidate = root / candidate
    # realpath follows every symlink, so a link inside the root that points out is caught here.
    resolved = Path(os.path.realpath(candidate))
    if resolved != root and not resolved.is_relative_to(root):
        return f"{user_path!r} is outside the allowed root {str(root)!r}"
    if not must_exist:
        return resolved
    try:
        mode = resolved.stat().st_mode
    except FileNotFoundError:
        return f"{user_path!r} does not exist under {str(root)!r}"
    except OSError as exc:
        return f"{user_path!r} cannot be read: {exc.strerror}"
    if kind == "dir" and not stat.S_ISDIR(mode):
        return f"{user_path!r} is not a directory"
    if kind == "file" and not stat.S_ISREG(mode):
        return f"{user_path!r} is not a regular file"
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        return f"{user_path!r} is not a regular file or directory"
    return resolved
