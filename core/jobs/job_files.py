"""A job's working files: the folder `jobs/<job_id>` under the data directory, where the worker
writes the job's config, its attempt logs and the training process's output (checkpoints,
TensorBoard events, the trained model before registration). Registering copies the model into the
registry's content-addressed store, so once a job has ended the folder is only a record of the
run, and a large one (each checkpoint is the model plus its optimizer state). `delete` removes it
for jobs that have ended and reports the bytes it freed."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from pathlib import Path

from psycopg_pool import AsyncConnectionPool

from trainforge.core.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from trainforge.core.jobs import models as m
from trainforge.core.jobs.store import append_event, job_from_row


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under `folder` (links are not followed), 0 when it is missing."""
    total = 0
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            total += st.st_size
    return total


class JobFiles:
    def __init__(self, pool: AsyncConnectionPool, jobs_dir: Path):
        self.pool = pool
        self.jobs_dir = Path(jobs_dir)

    def folder(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    async def delete(self, job_id: str, caller_key_id: str | None) -> tuple[m.Job, int]:
        """Deletes an ended job's folder; returns the job and the bytes freed. `caller_key_id`:
        only that key's jobs (a trainer), None for any job (an admin).

        Under the job's row lock the folder is renamed aside and the job's checkpoint records are
        dropped, with an event saying what was freed; the files themselves are deleted once that
        commits. A failed commit renames the folder back, so the records never describe files
        that are gone, nor outlive them."""
        try:
            key = uuid.UUID(job_id)
        except (ValueError, AttributeError, TypeError):
            raise InvalidArgument.one("job_id", f"{job_id!r} is not a job id (a UUID)") from None
        folder = self.folder(str(key))
        aside = self.jobs_dir / f".deleting-{key}"
        moved = False
        try:
            async with self.pool.connection() as conn, conn.transaction():
                cur = await conn.execute("SELECT * FROM jobs WHERE id = %s FOR UPDATE", (key,))
                row = await cur.fetchone()
                if row is None:
                    raise NotFound(f"job {job_id} does not exist", metadata={"job_id": job_id})
                if caller_key_id is not None and row["owner_key_id"] != caller_key_id:
                    raise PermissionDenied(f"job {job_id} belongs to another API key; only its owner or an admin "
                                           "may delete its files", reason="NOT_JOB_OWNER",
                                           metadata={"job_id": job_id})
                if row["state"] not in m.TERMINAL:
                    raise FailedPrecondition(
                        f"cannot delete the files of job {job_id}: it is {row['state']}; only a job that ended "
                        f"({', '.join(m.TERMINAL)}) can lose its checkpoints", reason="JOB_STATE",
                        metadata={"job_id": job_id, "state": row["state"]})
                freed = await asyncio.to_thread(folder_bytes, folder)
                if folder.exists():
                    shutil.rmtree(aside, ignore_errors=True)  # left by a crash between commit and delete
                    folder.rename(aside)
                    moved = True
                await conn.execute("DELETE FROM job_checkpoints WHERE job_id = %s", (key,))
                cur = await conn.execute("UPDATE jobs SET last_checkpoint = NULL, update_time = now() WHERE id = %s "
                                         "RETURNING *", (key,))
                updated = await cur.fetchone()
                message = (f"working files deleted: {freed} bytes freed ({folder})" if moved
                           else "working files deleted: none were left")
                await append_event(conn, key, m.LOG, message, metrics={"bytes_freed": float(freed)})
        except BaseException:
            if moved:
                aside.rename(folder)
            raise
        if moved:
            await asyncio.to_thread(shutil.rmtree, aside, True)
        return job_from_row(updated), freed
