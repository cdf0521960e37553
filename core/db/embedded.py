"""The embedded default database: a private PostgreSQL cluster under the data directory.

With no DATABASE_URL, `trainforge serve` creates a cluster with the system's `initdb`, runs it with
`pg_ctl` on 127.0.0.1 and a free port, and stops it on exit. The test suite starts its own cluster
through the same class (in `fast` mode), so tests never touch a PostgreSQL that happens to run on
the machine.

PostgreSQL refuses to run as root. When we are root (containers, CI) the cluster is created and run
as an unprivileged system user (`postgres` where it exists, else `nobody`): the data directory is
handed to that user and every parent of it must be traversable by it. We never loosen permissions
on directories we did not create; we name the one that blocks instead.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import psycopg
from psycopg import errors, sql

from trainforge.core.errors import FailedPrecondition, Unavailable

log = logging.getLogger(__name__)

_INSTALL_HINT = (
    "install PostgreSQL (Debian/Ubuntu: `apt-get install postgresql`), set TRAINFORGE_PG_BIN to the "
    "directory holding initdb and pg_ctl, or point DATABASE_URL at an existing server"
)

# sockaddr_un.sun_path is 108 bytes on Linux, NUL included: "<dir>/.s.PGSQL.<port>" must fit in 107.
_SUN_PATH_MAX = 107
_SOCKET_NAME_MAX = len("/.s.PGSQL.65535")
# unix_socket_directories is a comma/space separated list; a path with anything else in it goes to
# the hashed /tmp directory rather than through PostgreSQL's list quoting.
_PLAIN_PATH = re.compile(r"^[A-Za-z0-9/._+-]+$")

_CONF_NAME = "trainforge.conf"
_INCLUDE_LINE = f"include_if_exists = '{_CONF_NAME}'"
_LOG_TAIL_LINES = 40


def find_postgres_bin() -> Path:
    """The directory holding `initdb` and `pg_ctl`: $TRAINFORGE_PG_BIN, else the real directory of
    the `initdb` on PATH, else the highest /usr/lib/postgresql/<major>/bin (Debian's layout, which
    keeps initdb off PATH)."""
    override = os.environ.get("TRAINFORGE_PG_BIN")
    if override:
        path = Path(override)
        if not _has_pg_tools(path):
            raise Unavailable(
                f"TRAINFORGE_PG_BIN={override} does not hold executable initdb and pg_ctl; {_INSTALL_HINT}",
                reason="POSTGRES_NOT_FOUND",
            )
        return path

    on_path = shutil.which("initdb")
    if on_path:
        # /usr/local/bin/initdb may be a symlink; pg_ctl and postgres sit beside the real file.
        real_dir = Path(os.path.realpath(on_path)).parent
        if _has_pg_tools(real_dir):
            return real_dir

    def major(bin_dir: Path) -> tuple[int, ...]:
        try:
            return tuple(int(part) for part in bin_dir.parent.name.split("."))
        except ValueError:
            return (-1,)

    for bin_dir in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=major, reverse=True):
        if _has_pg_tools(bin_dir):
            return bin_dir

    raise Unavailable(
        f"no PostgreSQL server binaries (initdb, pg_ctl) found; {_INSTALL_HINT}", reason="POSTGRES_NOT_FOUND"
    )


def _has_pg_tools(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / tool, os.X_OK) and (bin_dir / tool).is_file() for tool in ("initdb", "pg_ctl"))


@dataclass(frozen=True)
class _RunAs:
    """Who the cluster's processes run as. `drop` is False when that is simply us."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    name: str
    home: str
    drop: bool


def _current_user() -> _RunAs:
    uid = os.geteuid()
    try:
        entry = pwd.getpwuid(uid)
        name, home = entry.pw_name, entry.pw_dir
    except KeyError:  # a uid without a passwd entry (some containers)
        name, home = str(uid), os.environ.get("HOME", "/")
    return _RunAs(uid, os.getegid(), tuple(os.getgroups()), name, home, drop=False)


def _unprivileged_user(data_dir: Path) -> _RunAs:
    """The user a root process runs the cluster as: the owner of an existing cluster, else
    `postgres`, else `nobody`."""
    entry = None
    if (data_dir / "PG_VERSION").exists():
        owner = data_dir.stat().st_uid
        if owner != 0:
            try:
                entry = pwd.getpwuid(owner)
            except KeyError:
                entry = None
    if entry is None:
        for name in ("postgres", "nobody"):
            try:
                entry = pwd.getpwnam(name)
                break
            except KeyError:
                continue
    if entry is None:
        raise Unavailable(
            "PostgreSQL cannot run as root and neither a `postgres` nor a `nobody` user exists; "
            "create one or set DATABASE_URL",
            reason="POSTGRES_NO_USER",
        )
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return _RunAs(entry.pw_uid, entry.pw_gid, groups, entry.pw_name, entry.pw_dir, drop=True)


def _check_traversable(path: Path, user: _RunAs) -> None:
    """Fail with the first ancestor of `path` that `user` cannot enter. Plain mode bits, checked
    the way the kernel does (owner class, then group, then other); POSIX ACLs are not consulted."""
    for parent in reversed(path.parents):
        st = parent.stat()
        if st.st_uid == user.uid:
            bit = stat.S_IXUSR
        elif st.st_gid in user.groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            raise Unavailable(
                f"the PostgreSQL cluster runs as user {user.name!r}, which cannot traverse {parent} "
                f"(mode {stat.S_IMODE(st.st_mode):o}, owner uid {st.st_uid}) on the way to {path}; "
                f"put the data directory elsewhere or make {parent} traversable (chmod o+x)",
                reason="POSTGRES_DATA_DIR_NOT_TRAVERSABLE",
                metadata={"directory": str(parent), "user": user.name},
            )


def _free_port() -> int:
    # The kernel hands out an unused port; there is a window before postgres binds it, which start()
    # covers by retrying with a fresh port when the bind fails.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedPostgres:
    """A private PostgreSQL cluster in `data_dir` (the PGDATA directory itself).

    `fast=True` turns off fsync, synchronous commit and full-page writes: a crash can lose or
    corrupt data, which is fine for a throw-away test cluster and never for a server's registry.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        database: str = "trainforge",
        log_file: Path | None = None,
        fast: bool = False,
    ):
        self.data_dir = Path(data_dir).absolute()
        self.database = database
        self.log_file = Path(log_file).absolute() if log_file else self.data_dir / "server.log"
        self.fast = fast
        self._requested_port = port
        self._port: int | None = None
        self._bin: Path | None = None
        self._user: _RunAs | None = None

    # -- public API ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise FailedPrecondition(f"the embedded PostgreSQL in {self.data_dir} is not started")
        return self._port

    @property
    def dsn(self) -> str:
        return self.dsn_for(self.database)

    def dsn_for(self, database: str) -> str:
        """DSN of another database on this cluster (e.g. `postgres` for administration)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{quote(database, safe='')}"

    def start(self, timeout: float = 60) -> str:
        """Create the cluster if needed, start it, create the database; return its DSN."""
        if self._port is not None:
            return self.dsn
        self._bin = self._find_bin()
        self._user = self._prepare_data_dir()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(timeout)
        self._prepare_log_file()

        if self._status() == "running":
            # A previous process died without stopping its server. Restarting (rather than
            # adopting it) makes this start's port and settings the ones in force.
            log.warning("PostgreSQL from a previous run is still running on %s; restarting it", self.data_dir)
            self._pg_ctl_stop("fast", timeout)

        attempts = 1 if self._requested_port else 3
        for attempt in range(1, attempts + 1):
            port = self._requested_port or _free_port()
            self._write_conf(port)
            log_offset = self.log_file.stat().st_size
            result = self._run(
                [str(self._bin / "pg_ctl"), "start", "-w", "-t", str(max(1, int(timeout))), "-D", str(self.data_dir),
                 "-l", str(self.log_file)],
                timeout=timeout + 15,
                # Its own session: a Ctrl-C aimed at `trainforge serve` must not fast-stop the
                # database under a server that is still draining requests; stop() shuts it down.
                new_session=True,
            )
            if result.returncode == 0:
                self._port = port
                break
            new_log = self._log_since(log_offset)
            if attempt < attempts and "Address already in use" in new_log:
                log.info("port %d was taken before PostgreSQL bound it; trying another", port)
                continue
            raise Unavailable(
                f"PostgreSQL in {self.data_dir} did not start: {result.stdout.strip()}\n"
                f"--- server log ({self.log_file}) ---\n{new_log or self._log_tail()}",
                reason="POSTGRES_START_FAILED",
                metadata={"data_dir": str(self.data_dir)},
            )

        log.info("PostgreSQL %s running on 127.0.0.1:%d (data %s)", self._bin.parent.name, self._port, self.data_dir)
        try:
            self._ensure_database(self.database)
        except BaseException:
            self.stop()
            raise
        return self.dsn

    def stop(self, mode: str = "fast", timeout: float = 60) -> None:
        """Stop the server (`pg_ctl stop -m <mode> -w`). Stopping a stopped cluster is a no-op."""
        self._port = None
        if not (self.data_dir / "postmaster.pid").exists():
            return
        if self._bin is None:
            self._bin = self._find_bin()
        if self._user is None:
            self._user = _unprivileged_user(self.data_dir) if os.geteuid() == 0 else _current_user()
        if self._status() != "running":
            return
        self._pg_ctl_stop(mode, timeout)
        log.info("PostgreSQL in %s stopped", self.data_dir)
        try:
            self._hashed_socket_dir().rmdir()  # only there for long paths; empty once stopped
        except OSError:
            pass

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- steps ------------------------------------------------------------------------------------

    def _find_bin(self) -> Path:
        """The binaries of the cluster's own major version when they are installed: after an
        upgrade adds PostgreSQL N+1 beside N, the highest version would refuse an N cluster."""
        version_file = self.data_dir / "PG_VERSION"
        if not os.environ.get("TRAINFORGE_PG_BIN") and version_file.exists():
            own = Path("/usr/lib/postgresql") / version_file.read_text().strip() / "bin"
            if _has_pg_tools(own):
                return own
        return find_postgres_bin()

    def _prepare_data_dir(self) -> _RunAs:
        root = os.geteuid() == 0
        user = _unprivileged_user(self.data_dir) if root else _current_user()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if root:
            _check_traversable(self.data_dir, user)
        # 0700: PostgreSQL refuses a data directory that others can read.
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        if root and not (self.data_dir / "PG_VERSION").exists():
            # A fresh (possibly pre-created, empty) directory: hand it to the cluster's user.
            os.chown(self.data_dir, user.uid, user.gid)
            os.chmod(self.data_dir, 0o700)
        return user

    def _initdb(self, timeout: float) -> None:
        assert self._bin is not None
        log.info("initialising PostgreSQL cluster in %s", self.data_dir)
        args = [
            str(self._bin / "initdb"), "-D", str(self.data_dir),
            # No password, by design of the embedded default: the server listens on 127.0.0.1
            # alone (_write_conf) and pg_hba trusts nothing else (_write_hba), its socket sits in a
            # 0700 directory, and the cluster is private to trainforge. What remains open is other
            # users of the same host over loopback: a shared multi-user host should set
            # DATABASE_URL to a server with real authentication.
            "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C",
        ]
        if self.fast:
            # Skips fsyncing the fresh cluster's files. Tests only, like the rest of fast mode; on
            # a 2-core VM with a fast virtual disk the gain is within noise (0.4-1.2 s either way).
            args.append("--no-sync")
        result = self._run(args, timeout=timeout)
        if result.returncode != 0:
            raise Unavailable(
                f"initdb failed for {self.data_dir} (exit {result.returncode}):\n{_tail(result.stdout)}",
                reason="POSTGRES_INITDB_FAILED",
                metadata={"data_dir": str(self.data_dir)},
            )
        self._write_hba()
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a") as fh:
            fh.write(f"\n# trainforge: settings rewritten on every start\n{_INCLUDE_LINE}\n")

    def _write_hba(self) -> None:
        # initdb -A trust also trusts ::1; we listen on 127.0.0.1 only and say so here too.
        self._write_owned(
            self.data_dir / "pg_hba.conf",
            "# trainforge embedded cluster: local socket and 127.0.0.1 only (see embedded.py)\n"
            "local  all          all                 trust\n"
            "host   all          all   127.0.0.1/32  trust\n"
            "local  replication  all                 trust\n"
            "host   replication  all   127.0.0.1/32  trust\n",
        )

    def _write_conf(self, port: int) -> None:
        socket_dir = self._socket_dir(port)
        lines = [
            "listen_addresses = '127.0.0.1'",
            f"port = {port}",
            f"unix_socket_directories = '{socket_dir}'",
            "unix_socket_permissions = 0700",
            # Enough for a server's pool, workers and a test suite that opens a pool per test.
            "max_connections = 200",
            "shared_buffers = '128MB'",
            "log_line_prefix = '%m [%p] '",
        ]
        if self.fast:
            # Tests only: a crash of a test cluster loses nothing anyone needs. On a 2-core VM an
            # autocommit INSERT takes 0.035 ms instead of 0.17-0.55 ms and CREATE DATABASE 35-50 ms
            # instead of 60-180 ms; a suite that makes a database per test feels that.
            lines += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        self._write_owned(self.data_dir / _CONF_NAME, "\n".join(lines) + "\n")

    def _socket_dir(self, port: int) -> Path:
        """The data directory itself when the socket path fits sun_path, else a stable per-cluster
        directory under /tmp (a long repo path plus pytest's tmp_path easily passes 107 bytes)."""
        if len(str(self.data_dir)) + _SOCKET_NAME_MAX <= _SUN_PATH_MAX and _PLAIN_PATH.match(str(self.data_dir)):
            return self.data_dir
        path = self._hashed_socket_dir()
        assert self._user is not None
        try:
            path.mkdir(mode=0o700)
            if self._user.drop:
                os.chown(path, self._user.uid, self._user.gid)
        except FileExistsError:
            pass
        st = path.lstat()
        # /tmp is shared: refuse a directory someone else planted under our name.
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != self._user.uid or stat.S_IMODE(st.st_mode) & 0o077:
            raise Unavailable(
                f"socket directory {path} exists but is not a 0700 directory owned by {self._user.name}; remove it",
                reason="POSTGRES_SOCKET_DIR",
            )
        return path

    def _hashed_socket_dir(self) -> Path:
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:16]
        return Path("/tmp") / f"trainforge-pg-{digest}"

    def _prepare_log_file(self) -> None:
        assert self._user is not None
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        if self._user.drop:
            _check_traversable(self.log_file, self._user)
        self.log_file.touch(mode=0o600, exist_ok=True)
        if self._user.drop:
            # pg_ctl opens the log as the cluster's user.
            os.chown(self.log_file, self._user.uid, self._user.gid)

    def _ensure_database(self, name: str) -> None:
        with psycopg.connect(self.dsn_for("postgres"), autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if exists:
                return
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                log.info("created database %s", name)
            except errors.DuplicateDatabase:
                pass  # another process created it between our check and our CREATE

    def _status(self) -> str:
        assert self._bin is not None
        result = self._run([str(self._bin / "pg_ctl"), "status", "-D", str(self.data_dir)], timeout=30)
        # pg_ctl status: 0 running, 3 not running, 4 no accessible data directory.
        return "running" if result.returncode == 0 else "stopped"

    def _pg_ctl_stop(self, mode: str, timeout: float) -> None:
        assert self._bin is not None
        result = self._run(
            [str(self._bin / "pg_ctl"), "stop", "-w", "-t", str(max(1, int(timeout))), "-m", mode,
             "-D", str(self.data_dir)],
            timeout=timeout + 15,
        )
        if result.returncode != 0 and self._status() == "running":
            raise Unavailable(
                f"PostgreSQL in {self.data_dir} did not stop: {result.stdout.strip()}\n"
                f"--- server log ({self.log_file}) ---\n{self._log_tail()}",
                reason="POSTGRES_STOP_FAILED",
                metadata={"data_dir": str(self.data_dir)},
            )

    # -- helpers ----------------------------------------------------------------------------------

    def _run(self, args: list[str], *, timeout: float, new_session: bool = False) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL tool as the cluster's user, stdout and stderr together."""
        assert self._user is not None
        user = self._user
        # PG* variables (PGDATA, PGPORT, PGHOST, PGOPTIONS...) from the caller's shell would steer
        # pg_ctl's readiness probe elsewhere; the C locale keeps messages parseable.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        kwargs: dict[str, object] = {}
        if user.drop:
            env.update(HOME=user.home, USER=user.name, LOGNAME=user.name)
            kwargs.update(user=user.uid, group=user.gid, extra_groups=list(user.groups))
        log.debug("running %s", " ".join(args))
        try:
            return subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                # The caller's cwd may be a directory the cluster's user cannot enter.
                cwd="/",
                timeout=timeout,
                start_new_session=new_session,
                **kwargs,
            )
        except subprocess.TimeoutExpired as exc:
            raise Unavailable(
                f"{Path(args[0]).name} {args[1] if len(args) > 1 else ''} timed out after {timeout:.0f} s "
                f"for {self.data_dir}\n--- server log ({self.log_file}) ---\n{self._log_tail()}",
                reason="POSTGRES_TIMEOUT",
            ) from exc

    def _write_owned(self, path: Path, text: str) -> None:
        path.write_text(text)
        os.chmod(path, 0o600)
        assert self._user is not None
        if self._user.drop:
            os.chown(path, self._user.uid, self._user.gid)

    def _log_since(self, offset: int) -> str:
        """The last lines of the server log written after `offset` (at most the last 64 KiB)."""
        try:
            with self.log_file.open("rb") as fh:
                fh.seek(max(offset, fh.seek(0, os.SEEK_END) - 65536))
                return _tail(fh.read().decode(errors="replace"))
        except OSError:
            return ""

    def _log_tail(self) -> str:
        return self._log_since(0)


def _tail(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
