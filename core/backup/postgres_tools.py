"""pg_dump and pg_restore from the system PostgreSQL: the bin directory EmbeddedPostgres uses
(TRAINFORGE_PG_BIN, else /usr/lib/postgresql/<major>/bin of the server's own major version, else
the newest installed), checked to be at least the server's major version (pg_dump refuses a newer
server). The password never appears on a command line (other users can read /proc/*/cmdline): it
goes through PGPASSWORD."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from psycopg import conninfo

from trainforge.core.db.embedded import find_postgres_bin
from trainforge.core.errors import Unavailable

_TAIL_CHARS = 4000


def _major_of(tool: Path) -> int:
    out = subprocess.run([str(tool), "--version"], capture_output=True, text=True, timeout=30).stdout
    found = re.search(r"(\d+)(?:\.\d+)?", out)
    return int(found.group(1)) if found else 0


def client_tool(name: str, server_major: int) -> Path:
    """The `name` binary (pg_dump, pg_restore) for a server of `server_major`."""
    candidates: list[Path] = []
    if os.environ.get("TRAINFORGE_PG_BIN"):
        candidates.append(Path(os.environ["TRAINFORGE_PG_BIN"]) / name)
    candidates.append(Path("/usr/lib/postgresql") / str(server_major) / "bin" / name)
    try:
        candidates.append(find_postgres_bin() / name)
    except Unavailable:
        pass
    on_path = shutil.which(name)
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)))
    tried = []
    for tool in dict.fromkeys(candidates):
        if tool.is_file() and os.access(tool, os.X_OK):
            major = _major_of(tool)
            if major >= server_major:
                return tool
            tried.append(f"{tool} ({major})")
    raise Unavailable(
        f"no {name} for PostgreSQL {server_major} or newer (found: {', '.join(tried) or 'none'}); install the "
        f"PostgreSQL {server_major} client tools or set TRAINFORGE_PG_BIN", reason="PG_TOOLS_NOT_FOUND")


def split_password(dsn: str) -> tuple[str, dict[str, str]]:
    """(the DSN without its password, the environment that carries it)."""
    params = conninfo.conninfo_to_dict(dsn)
    password = params.pop("password", None)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C")
    if password:
        env["PGPASSWORD"] = str(password)
    return conninfo.make_conninfo(**{k: str(v) for k, v in params.items()}), env


def run_tool(args: list[str], dsn: str, *, timeout: float, reason: str) -> None:
    """Runs a client tool with `--dbname` taken from `dsn`; a failure is Unavailable with its output."""
    bare, env = split_password(dsn)
    try:
        result = subprocess.run([*args, f"--dbname={bare}"], env=env, stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=timeout, cwd="/")
    except subprocess.TimeoutExpired:
        raise Unavailable(f"{Path(args[0]).name} did not finish in {timeout:.0f} s", reason=reason) from None
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip()[-_TAIL_CHARS:]
        raise Unavailable(f"{Path(args[0]).name} failed (exit {result.returncode}): {output}", reason=reason)
