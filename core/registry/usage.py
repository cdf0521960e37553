"""Latency percentiles from a fixed log-spaced histogram, so usage rows stay a few KiB however
many requests are recorded. Bucket i holds samples in [LOW * GROWTH**(i-1), LOW * GROWTH**i);
with GROWTH = 1.05 a percentile is reported within 5% of the true value."""

from __future__ import annotations

import math
from collections.abc import Sequence

LOW_MS = 0.01
GROWTH = 1.05
BUCKETS = math.ceil(math.log(600_000 / LOW_MS, GROWTH)) + 2  # 10 us .. 10 min: 369 buckets


def bucket_of(latency_ms: float) -> int:
    if latency_ms <= LOW_MS:
        return 0
    return min(BUCKETS - 1, 1 + int(math.log(latency_ms / LOW_MS, GROWTH)))


def add_samples(buckets: Sequence[int], samples: Sequence[float]) -> list[int]:
    counts = list(buckets) + [0] * (BUCKETS - len(buckets))
    for sample in samples:
        counts[bucket_of(sample)] += 1
    return counts


def percentile(buckets: Sequence[int], q: float) -> float:
    """The q-quantile (0..1), reported as the geometric middle of the bucket it falls in."""
    total = sum(buckets)
    if total == 0:
        return 0.0
    rank = q * total
    seen = 0
    for index, count in enumerate(buckets):
        seen += count
        if seen >= rank and count:
            if index == 0:
                return LOW_MS
            return LOW_MS * GROWTH ** (index - 0.5)
    return LOW_MS * GROWTH ** (len(buckets) - 1)
