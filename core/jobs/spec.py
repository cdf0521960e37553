"""Turns a requested job spec into the stored one: validated up front with every violation at
once (trainforge.core.training.config), defaults filled in and the data path resolved inside the
data root. Nothing is created when this raises."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from trainforge.core.errors import FieldViolation, NotFound
from trainforge.core.registry.models import split_registry_ref
from trainforge.core.registry.store import RegistryStore

COMPRESSED = "compressed"


class JobSpecPreparer:
    def __init__(self, data_root: Path, models_root: Path, max_dataset_bytes: int = 10 * 2**30,
                 registry: RegistryStore | None = None, *, config_root: Path | None = None):
        self.data_root, self.models_root, self.max_dataset_bytes = data_root, models_root, max_dataset_bytes
        self.registry = registry
        # Where `distributed.hostfile` may point (settings.configs_dir); None refuses every hostfile.
        self.config_root = config_root

    def prepare(self, spec: dict[str, Any], extra_violations: list[FieldViolation] | None = None) -> dict[str, Any]:
        # Imported here: the config module pulls in the training stack's settings, not needed to serve.
        from trainforge.core.training import config

        # The raw dict, not from_dict(spec): malformed fields and a bad data path are reported together.
        resolved = config.validate_config(spec, self.data_root, self.models_root, self.max_dataset_bytes,
                                          config_root=self.config_root, extra_violations=extra_violations or [])
        return config.to_dict(resolved)

    async def prepare_checked(self, spec: dict[str, Any]) -> dict[str, Any]:
        """`prepare`, plus what only the registry knows about a `name:version` / `name@alias` base
        model (that it exists, that it is not an int8 version), in the same one error."""
        problems = await self.registry_violations(spec)
        return await asyncio.to_thread(self.prepare, spec, problems)

    async def registry_violations(self, spec: dict[str, Any]) -> list[FieldViolation]:
        from trainforge.core.training.config import classify_model_reference
        from trainforge.core.training.model_loading import not_trainable_message

        model = spec.get("model")
        if self.registry is None or not isinstance(model, str) or not model:
            return []
        kind, _ = await asyncio.to_thread(classify_model_reference, model, Path(self.models_root))
        if kind != "registry":
            return []
        name, selector = split_registry_ref(model)
        try:
            version = await self.registry.get_version(name, selector)
        except NotFound as exc:
            return [FieldViolation("model", f"registry reference {model!r}: {exc.message}")]
        if version.model_type == COMPRESSED:
            return [FieldViolation("model", not_trainable_message(f"registry version {model!r}", "compressed-tensors"))]
        return []
