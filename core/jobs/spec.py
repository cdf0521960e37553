"""Turns a requested job spec into the stored one: validated up front with every violation at
once (trainforge.core.training.config), defaults filled in and the data path resolved inside the
data root. Nothing is created when this raises."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class JobSpecPreparer:
    def __init__(self, data_root: Path, models_root: Path, max_dataset_bytes: int = 10 * 2**30):
        self.data_root, self.models_root, self.max_dataset_bytes = data_root, models_root, max_dataset_bytes

    def prepare(self, spec: dict[str, Any]) -> dict[str, Any]:
        # Imported here: the config module pulls in the training stack's settings, not needed to serve.
        from trainforge.core.training import config

        # The raw dict, not from_dict(spec): malformed fields and a bad data path are reported together.
        resolved = config.validate_config(spec, self.data_root, self.models_root, self.max_dataset_bytes)
        return config.to_dict(resolved)
