"""`trainforge worker`: training workers without a server, for more machines (or more processes)
sharing one database. They claim queued jobs exactly like the workers inside `serve` (SKIP LOCKED,
leases, fencing), so any number can run at once. The database must be reachable: DATABASE_URL /
--database-url, or the embedded cluster of a `serve` running on the same --data-dir (never started
here: that would take the data directory from `serve`). Jobs write under data_dir/jobs and register
their models in this machine's artifact root: on several machines, point artifacts_root (and
models_root, data_root) at storage they share."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.markup import escape

from trainforge.core.db.pool import open_pool
from trainforge.core.errors import TrainforgeError
from trainforge.core.jobs.devices import visible_gpus
from trainforge.core.jobs.store import JobStore
from trainforge.core.registry.artifacts import ArtifactStore
from trainforge.core.registry.store import RegistryStore
from trainforge.server.cli.common import (
    ConfigOpt,
    DatabaseUrlOpt,
    DataDirOpt,
    console,
    load_settings_or_exit,
    service_error,
    stop_on_signals,
)
from trainforge.server.cli.database import admin_database
from trainforge.server.observability import configure_logging
from trainforge.server.service import WorkerGroup, child_records, worker_config


def worker(
    data_dir: DataDirOpt = None, database_url: DatabaseUrlOpt = None, config: ConfigOpt = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=64,
                                             help="Jobs this process runs at once (one worker each).")] = 1,
    gpus: Annotated[str | None, typer.Option(
        "--gpus", help="GPUs to hand out, each job getting its own: '0,1,2,3', 'none' (CPU only) or 'auto' "
                       "(CUDA_VISIBLE_DEVICES, else every GPU NVML finds; the default, or settings.gpus).")] = None,
) -> None:
    """Run training workers against the database until Ctrl-C or SIGTERM (no gRPC server)."""
    settings = load_settings_or_exit(config, data_dir=str(data_dir) if data_dir else None, database_url=database_url,
                                     gpus=gpus)
    with admin_database(settings, start_embedded=False) as database:
        configure_logging(settings.log_level)  # once the database is there: errors before it are one line

        async def main() -> None:
            stop = asyncio.Event()
            stop_on_signals(stop)
            settings.ensure_dirs()
            # Training processes a killed worker on this data directory left behind go first: the
            # jobs they ran resume here, in the same output folders.
            await asyncio.to_thread(child_records(settings).reap)
            # Per worker: one connection for claims and heartbeats, one for registering a result; one
            # for the process's own heartbeat.
            pool = await open_pool(database.dsn, min_size=1, max_size=2 * concurrency + 2)
            try:
                registry = RegistryStore(pool, ArtifactStore(settings.artifacts_dir), settings.models_dir)
                group = WorkerGroup(JobStore(pool), registry, worker_config(settings, database.dsn), concurrency,
                                    gpus=visible_gpus(settings.gpus))
                group.start()
                on = f"GPUs {','.join(group.devices.gpus)}" if group.devices.gpu_host else "the CPU"
                console.print(f"{concurrency} worker(s) claiming jobs from {escape(database.where)} to run on "
                              f"{escape(on)}; Ctrl-C stops them", soft_wrap=True)
                await stop.wait()
                await group.stop()
            finally:
                await pool.close()

        try:
            asyncio.run(main())
        except TrainforgeError as exc:
            raise service_error(exc) from None
    console.print("workers stopped")
