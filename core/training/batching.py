"""Which examples each rank sees at each micro-step: a pure function of (seed, epoch, position).

Each epoch is one seeded permutation of the training examples, wrapped around to a whole number
of optimiser steps (`samples_per_step = batch_size x world_size x gradient_accumulation`), so every
rank gets a full micro-batch at every micro-step and DeepSpeed's accumulation boundaries line up
with epochs. Global micro-batch k holds positions [k*B*W, (k+1)*B*W); rank r takes its r-th slice
of B. A checkpoint stores the epoch and the number of samples consumed in it, so a resume picks up
at the same example, also under another world size (rounded down to that size's step boundary).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BatchPlan:
    examples: int
    batch_size: int
    world_size: int
    accumulation: int
    seed: int

    @property
    def samples_per_micro_step(self) -> int:
        return self.batch_size * self.world_size

    @property
    def samples_per_step(self) -> int:
        return self.samples_per_micro_step * self.accumulation

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.examples / self.samples_per_step))

    @property
    def micro_steps_per_epoch(self) -> int:
        return self.steps_per_epoch * self.accumulation

    def order(self, epoch: int) -> np.ndarray:
        """Example indices of `epoch`, wrapped to steps_per_epoch x samples_per_step. Shape (S,)."""
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.examples)
        need = self.steps_per_epoch * self.samples_per_step
        reps = math.ceil(need / self.examples)
        return np.tile(perm, reps)[:need]

    def micro_batch(self, order: np.ndarray, micro_step: int, rank: int) -> list[int]:
        start = micro_step * self.samples_per_micro_step + rank * self.batch_size
        return order[start:start + self.batch_size].tolist()

    def resume_micro_step(self, samples_in_epoch: int) -> int:
        """The micro-step to start from after `samples_in_epoch` samples, at a step boundary."""
        steps_done = samples_in_epoch // self.samples_per_step
        return min(steps_done, self.steps_per_epoch) * self.accumulation
