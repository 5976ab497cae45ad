"""The optimisation record (:class:`Recipe`), the learning-rate schedule and the data order.

Data order: epoch ``e`` visits a permutation drawn from ``seed + e``; a global micro-batch of
``batch_size / grad_accum`` items is split across ranks. Micro-batch ``m`` is therefore a pure
function of ``m``: resuming at optimiser step ``s`` continues at micro-batch ``s * grad_accum``,
and a 1-rank run sees the same global batches as a K-rank run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List

import torch


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the optimisation, independent of the launch (ranks, devices).

    ``batch_size`` is the global batch of one optimiser step (all ranks, all accumulation
    micro-steps together); it must be divisible by ``world_size * grad_accum``.
    """

    name: str
    epochs: float = 8.0
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 5e-4
    betas: tuple = (0.9, 0.999)
    warmup_fraction: float = 0.01  # of all optimiser steps
    min_lr_ratio: float = 0.01  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    checkpoint_every: int = 1000  # optimiser steps
    val_every: int = 2000  # optimiser steps; validation also runs at the end
    log_every: int = 20
    val_images: int = 200  # held out from the image set (the last ones in sorted order)
    val_prompts: int = 8  # boxes (largest SA-1B annotations) or points per validation image
    seed: int = 0
    description: str = ""

    def replace(self, **changes: Any) -> "Recipe":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Recipe":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in d.items() if k in known}, "betas": tuple(d["betas"])})


class WarmupCosine:
    """lr factor: linear from ~0 to 1 over ``warmup`` steps, then cosine to ``min_ratio``."""

    def __init__(self, total: int, warmup: int, min_ratio: float) -> None:
        self.total, self.warmup, self.min_ratio = int(total), int(warmup), float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        t = (step - self.warmup) / max(1, self.total - self.warmup)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


class MicroBatchSampler(torch.utils.data.Sampler):
    """Yields this rank's index lists for micro-batches ``start .. stop - 1`` (see module doc)."""

    def __init__(self, n: int, global_micro: int, rank: int, world: int, seed: int, start: int, stop: int) -> None:
        self.n, self.g, self.rank, self.world, self.seed = n, global_micro, rank, world, seed
        self.start, self.stop = start, stop
        self.per_epoch = n // global_micro
        self.local = global_micro // world

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def position(self, m: int) -> tuple:
        return divmod(m, self.per_epoch)  # (epoch, micro-batch within the epoch)

    def __iter__(self) -> Iterator[List[int]]:
        epoch, perm = -1, None
        for m in range(self.start, self.stop):
            e, pos = self.position(m)
            if e != epoch:
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + e)
                perm, epoch = torch.randperm(self.n, generator=gen).tolist(), e
            chunk = perm[pos * self.g : (pos + 1) * self.g]
            yield chunk[self.rank * self.local : (self.rank + 1) * self.local]
