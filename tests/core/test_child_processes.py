"""Children die with the process that started them (parent-death signal), and what a killed owner
left behind is killed by the next start from its records, never a process that merely reuses a
recorded pid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from trainforge.core.child_processes import ChildRecords, pid_alive, process_info


def _wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def _owner(folder: Path, *, death_signal: bool) -> tuple[subprocess.Popen, int]:
    """A Python process that starts `sleep 300` in a session of its own (as serve starts Envoy),
    records it under `folder`, prints its pid and waits."""
    code = textwrap.dedent(f"""
        import subprocess, sys, time
        from pathlib import Path
        from trainforge.core.child_processes import ChildRecords, with_parent_death_signal
        argv = ["sleep", "300"]
        if {death_signal!r}:
            argv = with_parent_death_signal(argv)
        child = subprocess.Popen(argv, start_new_session=True)
        ChildRecords(Path({str(folder)!r})).add(child.pid, "sleeper")
        print(child.pid, flush=True)
        time.sleep(300)
    """)
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    return owner, int(owner.stdout.readline())


def _kill(owner: subprocess.Popen) -> None:
    owner.kill()
    owner.wait(10)


def test_a_child_with_the_parent_death_signal_dies_with_its_killed_parent(tmp_path: Path):
    owner, child = _owner(tmp_path, death_signal=True)
    assert pid_alive(child)
    _kill(owner)
    assert _wait_gone(child), "the child outlived its SIGKILLed parent"


def test_reap_kills_what_a_killed_owner_left_and_forgets_it(tmp_path: Path):
    # Without the death signal the child survives its owner, as Envoy did before.
    owner, child = _owner(tmp_path, death_signal=False)
    try:
        _kill(owner)
        time.sleep(0.2)
        assert pid_alive(child)
        killed = ChildRecords(tmp_path).reap()
        assert [r.pid for r in killed] == [child] and killed[0].what == "sleeper"
        assert _wait_gone(child, 1)
        assert list(tmp_path.glob("*.json")) == []
    finally:
        if pid_alive(child):
            os.kill(child, signal.SIGKILL)


def test_reap_leaves_the_children_of_a_live_owner(tmp_path: Path):
    owner, child = _owner(tmp_path, death_signal=True)
    try:
        assert ChildRecords(tmp_path).reap() == []
        assert pid_alive(child) and (tmp_path / f"{child}.json").exists()
    finally:
        _kill(owner)
        _wait_gone(child)


def test_reap_never_kills_a_process_that_reuses_a_recorded_pid(tmp_path: Path):
    # A record whose owner is gone and whose pid now names another process (here: a live process
    # with another start time, as after pid reuse) must not be killed.
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        info = process_info(bystander.pid)
        dead_owner = subprocess.Popen(["true"])
        dead_owner.wait()
        record = {"pid": bystander.pid, "start_ticks": info.start_ticks - 1, "what": "old envoy",
                  "host": os.uname().nodename, "boot": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
                  "owner_pid": dead_owner.pid, "owner_start_ticks": 1}
        (tmp_path / f"{bystander.pid}.json").write_text(json.dumps(record))
        (tmp_path / "12345.json").write_text("{half a reco")  # written by an owner that died mid-write
        assert ChildRecords(tmp_path).reap() == []
        assert bystander.poll() is None
        assert list(tmp_path.glob("*.json")) == []
    finally:
        bystander.kill()
        bystander.wait()
