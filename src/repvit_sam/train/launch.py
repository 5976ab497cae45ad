"""Where a training process sits: torchrun's ranks, its device, the process group, logging.

Every training job (``distill embed`` / ``train``, ``finetune``) reads its launch with
:func:`launch_from_env`: torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``, or one process
when they are absent. GPUs talk over NCCL, CPUs over gloo.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, List, Optional

import torch
import torch.distributed as dist

log = logging.getLogger("repvit_sam.train")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (tests and tqdm swap it)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(rank: int) -> None:
    """INFO on rank 0, warnings only on the others; every line says its rank."""
    if not log.handlers:
        log.addHandler(_StderrHandler())
        log.propagate = False
    log.handlers[0].setFormatter(logging.Formatter(f"[rank {rank}] %(levelname)s: %(message)s"))
    log.setLevel(logging.INFO if rank == 0 else logging.WARNING)


@dataclass
class Launch:
    """Where this process sits: torchrun's RANK / WORLD_SIZE / LOCAL_RANK, or a single process."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launch_from_env(device: Optional[str]) -> Launch:
    """Read the torchrun environment and pick the device: ``device`` when given (``cuda`` means
    this rank's ``cuda:LOCAL_RANK``), else the local GPU when there is one, else the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device!r} is not a torch device; use cpu or cuda") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {device}: no CUDA GPU is available here; use --device cpu")
        dev = torch.device("cuda", local if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    setup_logging(rank)
    return Launch(rank, world, local, dev)


def init_process_group(launch: Launch) -> None:
    """NCCL on GPUs, gloo on CPUs; a long timeout, since rank 0 validates while others wait."""
    if launch.distributed and not dist.is_initialized():
        backend = "nccl" if launch.device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(hours=2))


def teardown(launch: Launch) -> None:
    if launch.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(launch: Launch) -> None:
    if launch.distributed:
        dist.barrier()


def gather_objects(obj: Any, launch: Launch) -> List[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not launch.distributed:
        return [obj]
    out: List[Any] = [None] * launch.world_size
    dist.all_gather_object(out, obj)
    return out
