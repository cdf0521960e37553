"""Children that must not outlive the trainforge process that started them (Envoy, the extra API
processes, training jobs, evaluation and compression children). Two mechanisms, because neither
covers every case alone:

- `with_parent_death_signal`: the kernel sends the child SIGTERM when its parent dies, even by
  SIGKILL (PR_SET_PDEATHSIG, through util-linux `setpriv`). The "parent" is the *thread* that
  forked the child, so children are started from the event loop's thread, never from a thread of
  `asyncio.to_thread` (those end when the loop's executor shuts down).
- `ChildRecords`: one small file per child under data_dir/run/children (its pid, its start time,
  the boot, and the same for its owner). The next `serve` or `worker` on that data directory kills
  whatever an owner that is no longer alive left behind. This covers a child that takes its time
  over SIGTERM (a training process finishes its step first, and the resumed attempt must not share
  its output folder with it), a missing `setpriv`, and the instant between fork and prctl.

A process is identified by pid *and* start time (field 22 of /proc/<pid>/stat, in clock ticks
since boot) on the same boot: a pid the kernel has since given to another process is never
killed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)


def with_parent_death_signal(argv: list[str]) -> list[str]:
    """Prefix the command with util-linux `setpriv --pdeathsig`: the child gets SIGTERM when the
    thread that started it dies, even by SIGKILL. (A preexec_fn would do the same but is unsafe in
    a process with threads, like the server with its gRPC pool.)"""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *argv] if setpriv else argv


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    start_ticks: int
    pgid: int
    zombie: bool


def process_info(pid: int) -> ProcessInfo | None:
    """The process `pid` now, from /proc/<pid>/stat; None when there is none."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # The command name (field 2) may hold spaces and parentheses: the fields start after the last ")".
    fields = raw[raw.rfind(")") + 2:].split()
    try:
        return ProcessInfo(pid, int(fields[19]), int(fields[2]), fields[0] in ("Z", "X"))
    except (IndexError, ValueError):
        return None


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def same_process(pid: int, start_ticks: int) -> bool:
    """True when `pid` is still the process that had `start_ticks`, and is not a zombie."""
    info = process_info(pid)
    return info is not None and info.start_ticks == start_ticks and not info.zombie


def pid_alive(pid: int) -> bool:
    """True when a process (not a zombie) with this pid exists."""
    info = process_info(pid)
    return info is not None and not info.zombie


def group_members(pgid: int, since_ticks: int) -> list[int]:
    """Live processes in process group `pgid` that started at or after `since_ticks`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        info = process_info(int(entry.name))
        if info is not None and info.pgid == pgid and not info.zombie and info.start_ticks >= since_ticks:
            found.append(info.pid)
    return found


@dataclass(frozen=True)
class ChildRecord:
    pid: int
    start_ticks: int
    what: str
    host: str
    boot: str
    owner_pid: int
    owner_start_ticks: int


class ChildRecords:
    """The children this process started, one JSON file each under `folder`, and the cleanup of
    those a dead owner left. Children are started with a session (and so a process group) of their
    own, so the group id is the child's pid and killing the group takes its descendants along
    (DeepSpeed's launcher and its ranks)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def add(self, pid: int, what: str) -> None:
        info, me = process_info(pid), process_info(os.getpid())
        if info is None or me is None:
            return  # already gone, or no /proc: nothing a later start could check either
        record = ChildRecord(pid, info.start_ticks, what, socket.gethostname(), boot_id(), me.pid, me.start_ticks)
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{pid}.{uuid.uuid4().hex[:6]}.tmp"
        tmp.write_text(json.dumps(asdict(record)))
        tmp.replace(self._path(pid))

    def remove(self, pid: int) -> None:
        self._path(pid).unlink(missing_ok=True)

    def _path(self, pid: int) -> Path:
        return self.folder / f"{pid}.json"

    def reap(self, timeout: float = 5.0) -> list[ChildRecord]:
        """Kills (SIGKILL, whole process group) every recorded child whose owner is no longer
        alive and that is still the process recorded, waits up to `timeout` for them to be gone,
        and forgets their records. Records of live owners (another `worker` on this data
        directory) and of other machines are left alone. Returns the children it killed."""
        if not self.folder.is_dir():
            return []
        host, boot = socket.gethostname(), boot_id()
        killed: list[ChildRecord] = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                record = ChildRecord(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                path.unlink(missing_ok=True)  # half written by a process that died mid-write
                continue
            if record.host != host:
                continue  # a data directory shared between machines: not ours to judge
            if record.boot != boot:
                path.unlink(missing_ok=True)  # from before a reboot: nothing of it runs
                continue
            if same_process(record.owner_pid, record.owner_start_ticks):
                continue
            if self._kill_group(record):
                killed.append(record)
            path.unlink(missing_ok=True)
        deadline = time.monotonic() + timeout
        while killed and time.monotonic() < deadline:
            if not any(group_members(r.pid, r.start_ticks) for r in killed):
                break
            time.sleep(0.05)
        for record in killed:
            log.warning("killed %s (pid %d) left running by trainforge process %d, which is gone",
                        record.what, record.pid, record.owner_pid)
        return killed

    @staticmethod
    def _kill_group(record: ChildRecord) -> bool:
        leader = process_info(record.pid)
        if leader is not None and not leader.zombie and leader.start_ticks != record.start_ticks:
            return False  # the pid belongs to another process now
        # The leader may be gone while the rest of its group lives on (ranks under a dead
        # launcher); the kernel does not hand out a pid that is still some group's id.
        if not group_members(record.pid, record.start_ticks):
            return False
        try:
            os.killpg(record.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return False
        return True
