"""Checks of registry input. Each check collects every violation and raises one InvalidArgument."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

from trainforge.core.errors import FieldViolation, InvalidArgument
from trainforge.core.registry.models import MODEL_TYPES, NewVersion

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/]{0,127}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-+]{0,63}$")
ALIAS_RE = re.compile(r"^[a-z][a-z0-9_\-]{0,63}$")
TAG_RE = re.compile(r"^[^\x00-\x1f]{1,64}$")
METRIC_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
MAX_DESCRIPTION = 4096
MAX_CHANGELOG = 16384
MAX_TAGS = 32
MAX_METRICS = 128
MAX_PAGE_SIZE = 1000


class Violations:
    """Collects field violations; `raise_if_any` raises them together."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)


def check_name(v: Violations, field: str, value: str) -> None:
    if not value:
        v.add(field, "is required")
    elif not NAME_RE.match(value):
        v.add(field, "must be 1-128 characters of letters, digits and ._-/, starting with a letter or digit")


def check_version_string(v: Violations, field: str, value: str) -> None:
    if not value:
        v.add(field, "is required")
    elif not VERSION_RE.match(value):
        v.add(field, "must be 1-64 characters of letters, digits and ._-+, starting with a letter or digit")


def check_text(v: Violations, field: str, value: str, limit: int) -> None:
    if len(value) > limit:
        v.add(field, f"must be at most {limit} characters (got {len(value)})")


def check_tags(v: Violations, field: str, tags: Iterable[str]) -> None:
    tags = list(tags)
    if len(tags) > MAX_TAGS:
        v.add(field, f"at most {MAX_TAGS} tags (got {len(tags)})")
    for i, tag in enumerate(tags):
        if not TAG_RE.match(tag):
            v.add(f"{field}[{i}]", "must be 1-64 printable characters")


def check_metrics(v: Violations, field: str, metrics: Mapping[str, float]) -> None:
    if len(metrics) > MAX_METRICS:
        v.add(field, f"at most {MAX_METRICS} metrics (got {len(metrics)})")
    for name, value in metrics.items():
        if not METRIC_RE.match(name):
            v.add(f"{field}.{name}", "metric names are 1-64 letters, digits and _, starting with a letter")
        elif not math.isfinite(value):
            v.add(f"{field}.{name}", "must be a finite number")


def check_new_version(new: NewVersion) -> None:
    v = Violations()
    check_name(v, "name", new.name)
    check_version_string(v, "version", new.version)
    check_text(v, "description", new.description, MAX_DESCRIPTION)
    check_text(v, "changelog", new.changelog, MAX_CHANGELOG)
    if new.model_type and new.model_type not in MODEL_TYPES:
        v.add("model_type", f"must be one of {', '.join(MODEL_TYPES)} (got {new.model_type!r})")
    if not math.isfinite(new.size_mb) or new.size_mb < 0:
        v.add("size_mb", "must be a finite number >= 0")
    if new.parameter_count < 0:
        v.add("parameter_count", "must be >= 0")
    arch = new.architecture
    for name in ("layers", "hidden_size", "attention_heads", "vocab_size", "max_sequence_length"):
        if getattr(arch, name) < 0:
            v.add(f"architecture.{name}", "must be >= 0")
    check_text(v, "architecture.model_family", arch.model_family, 128)
    check_metrics(v, "performance_metrics", new.performance_metrics)
    check_tags(v, "tags", new.tags)
    check_text(v, "lineage.base_model", new.lineage.base_model, 1024)
    check_text(v, "lineage.dataset_digest", new.lineage.dataset_digest, 128)
    check_text(v, "source", new.source, 4096)
    v.raise_if_any()


def check_alias(v: Violations, field: str, alias: str) -> None:
    if not alias:
        v.add(field, "is required")
    elif not ALIAS_RE.match(alias):
        v.add(field, "must be 1-64 characters of lowercase letters, digits, _ and -, starting with a letter")


def check_page_size(v: Violations, page_size: int, default: int = 50, limit: int = MAX_PAGE_SIZE) -> int:
    if page_size < 0:
        v.add("page_size", "must be >= 0")
        return default
    if page_size > limit:
        v.add("page_size", f"must be at most {limit}")
        return default
    return page_size or default
