"""Reporters the tests plug into the entrypoint with `--reporter tests.training.reporters:Class`."""

from __future__ import annotations

import os

from trainforge.core.training.reporting import PrintReporter


class PauseReporter(PrintReporter):
    """Prints like PrintReporter and asks for a pause once step $PAUSE_AT is reached; built by the
    entrypoint with job_id and dsn keyword arguments, like the Postgres reporter."""

    def __init__(self, job_id: str = "", dsn: str = ""):
        super().__init__(job_id, dsn, stop_after=(int(os.environ["PAUSE_AT"]), "pause"))
