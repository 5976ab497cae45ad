"""Shared by embed / train / export: the launch (ranks, device), loading models and checkpoints,
and batch-norm synchronisation across ranks."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
from torch import nn

from ..config import SamConfig
from ..weights import CheckpointError, StateDict, extract_state_dict, load_into, read_checkpoint
from .configs import is_registered, model_config

log = logging.getLogger("repvit_sam.distill")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (tests and tqdm swap it)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(rank: int) -> None:
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
    dev = torch.device(device)
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


# ------------------------------------------------------------------ models and checkpoints
def read_state_dict(path: Path, what: str) -> StateDict:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{what} not found: {path}")
    return extract_state_dict(read_checkpoint(path), source=str(path))


def load_teacher(name: str, checkpoint: Optional[Path], device: torch.device):
    """(teacher Sam in eval mode, its config). A registered variant without ``checkpoint`` uses
    the official weights (cache or download); test-size models need ``checkpoint``."""
    from ..registry import build_from_config

    cfg = model_config(name)
    if is_registered(name):
        from ..hub import load_pretrained

        model = load_pretrained(name, checkpoint=checkpoint, device=device)
    else:
        if checkpoint is None:
            raise CheckpointError(f"teacher {name!r} has no official weights: pass --teacher-checkpoint")
        model = build_from_config(cfg)
        load_into(model, read_state_dict(checkpoint, "teacher checkpoint"), variant=name, source=str(checkpoint))
        model = model.to(device)
    return model.eval(), cfg


def decoder_state(teacher_sd: StateDict, source: str) -> StateDict:
    """The ``prompt_encoder.*`` and ``mask_decoder.*`` entries of a full SAM checkpoint."""
    sd = {k: v for k, v in teacher_sd.items() if k.startswith(("prompt_encoder.", "mask_decoder."))}
    if not sd:
        raise CheckpointError(f"{source} has no prompt_encoder.* / mask_decoder.* weights: give the teacher's full SAM checkpoint")
    return sd


class _EncoderStub(nn.Module):
    def __init__(self, img_size: int) -> None:
        super().__init__()
        self.img_size = img_size


def build_decoder_sam(cfg: SamConfig, teacher_sd: StateDict, source: str, device: torch.device):
    """A Sam holding only the teacher's prompt encoder and mask decoder (no image encoder)."""
    from ..modeling.sam import Sam
    from ..registry import build_from_config

    with torch.device("meta"):
        full = build_from_config(cfg)
    sam = Sam(_EncoderStub(cfg.img_size), full.prompt_encoder, full.mask_decoder, cfg.pixel_mean, cfg.pixel_std)
    sam.to_empty(device=device)
    sam.pixel_mean.copy_(torch.tensor(cfg.pixel_mean).view(-1, 1, 1))
    sam.pixel_std.copy_(torch.tensor(cfg.pixel_std).view(-1, 1, 1))
    sd = decoder_state(teacher_sd, source)
    expected = {k: tuple(v.shape) for k, v in sam.state_dict().items()}
    from ..weights import check_fits

    check_fits(sd, expected, variant=cfg.name + " (prompt encoder + mask decoder)", source=source)
    sam.load_state_dict(sd, strict=True)
    return sam.eval()


# ------------------------------------------------------------------ batch norm across ranks
class AllReduceBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-time statistics are those of the global batch (all ranks).

    ``torch.nn.SyncBatchNorm`` refuses CPU tensors (it needs a GPU), so CPU/gloo runs use this:
    two autograd-aware all-reduces (sum, then sum of squared deviations) give the exact global
    mean and biased variance; the running variance gets the unbiased one, as BatchNorm2d does.
    Same parameters and buffers as BatchNorm2d, so checkpoints are interchangeable.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        count = torch.tensor([x.numel() // c], dtype=torch.float64, device=x.device)
        dist.all_reduce(count)
        n = float(count.item())
        mean = all_reduce(x.sum(dim=(0, 2, 3))) / n
        centred = x - mean.view(1, c, 1, 1)
        var = all_reduce((centred * centred).sum(dim=(0, 2, 3))) / n
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * (n / max(n - 1, 1)), alpha=m)
        y = centred * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Batch statistics over all ranks: torch's SyncBatchNorm on GPUs, AllReduceBatchNorm2d on
    CPUs (logged)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    log.info("CPU run: torch.nn.SyncBatchNorm needs a GPU; batch norm is synchronised with all-reduce (AllReduceBatchNorm2d)")
    n = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.BatchNorm2d:
                new = AllReduceBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
                new.load_state_dict(child.state_dict())
                new.train(child.training)
                setattr(parent, name, new)
                n += 1
    return model
