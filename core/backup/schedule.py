"""Backups `trainforge serve` takes on its own (`backup_interval_hours` above 0): into `backup_dir`,
as `trainforge-<UTC time>` folders, keeping the newest `backup_keep`.

The next backup is due one interval after the newest complete one in the folder, so restarting the
server neither skips a backup (a restart every 20 h with a 24 h interval would otherwise never take
one) nor takes one at every start. A failed backup is logged and tried again after a pause (at most
15 minutes, or the interval if shorter); it never affects the service."""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from trainforge.core.backup.archive import MANIFEST, write_backup

log = logging.getLogger(__name__)

PREFIX = "trainforge-"
_TIME_FORMAT = "%Y%m%dT%H%M%S"
RETRY_SECONDS = 900.0
STALE_PARTIAL_SECONDS = 24 * 3600.0  # a `.partial-<pid>` folder this old was left by a crash


def backup_name(now: datetime) -> str:
    """`trainforge-20260102T030405123Z`: UTC to the millisecond, so names sort by time."""
    return f"{PREFIX}{now.strftime(_TIME_FORMAT)}{now.microsecond // 1000:03d}Z"


def complete_backups(folder: Path) -> list[Path]:
    """The finished backups in `folder`, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.name.startswith(PREFIX) and ".partial-" not in p.name and (p / MANIFEST).is_file())


def prune(folder: Path, keep: int) -> list[Path]:
    """Deletes all but the newest `keep` backups, and partial folders a crash left; returns them."""
    removed = complete_backups(folder)[:-keep] if keep > 0 else []
    now = time.time()
    removed += [p for p in folder.glob(f"{PREFIX}*.partial-*") if now - p.stat().st_mtime > STALE_PARTIAL_SECONDS]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


class BackupSchedule:
    def __init__(self, dsn: str, artifacts_root: Path, folder: Path, interval_seconds: float, keep: int):
        self.dsn, self.artifacts_root, self.folder = dsn, Path(artifacts_root), Path(folder)
        self.interval, self.keep = interval_seconds, keep
        self._stop = asyncio.Event()
        self._cancel = threading.Event()  # read by the backup thread between blobs
        self._task: asyncio.Task[None] | None = None

    def seconds_until_due(self) -> float:
        done = complete_backups(self.folder)
        if not done:
            return 0.0
        stamp = done[-1].name.removeprefix(PREFIX).rstrip("Z")
        try:
            taken = datetime.strptime(stamp[:15], _TIME_FORMAT).replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            taken = done[-1].stat().st_mtime
        return max(0.0, taken + self.interval - time.time())

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="trainforge-backups")

    async def stop(self) -> None:
        """Stops the schedule; a backup in progress is abandoned at its next blob (its partial
        folder is removed) rather than holding up the shutdown."""
        self._stop.set()
        self._cancel.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), self.seconds_until_due())
                return
            except TimeoutError:
                pass
            try:
                await asyncio.to_thread(self.take)
            except Exception:  # noqa: BLE001 - logged; the service goes on and the next try comes later
                if self._stop.is_set():
                    return
                log.exception("scheduled backup into %s failed; trying again in %.0f s", self.folder,
                              min(RETRY_SECONDS, self.interval))
                try:
                    await asyncio.wait_for(self._stop.wait(), min(RETRY_SECONDS, self.interval))
                    return
                except TimeoutError:
                    pass

    def take(self) -> Path:
        """One backup now, then the pruning of old ones."""
        target = self.folder / backup_name(datetime.now(timezone.utc))
        result = write_backup(self.dsn, self.artifacts_root, target, cancelled=self._cancel)
        removed = prune(self.folder, self.keep)
        log.info("backup written", extra={"fields": {
            "path": str(result.path), "blobs": result.blob_count, "blob_bytes": result.blob_bytes,
            "pruned": len(removed)}})
        return result.path
