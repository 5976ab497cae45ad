"""Shared by embed / train / export: loading teachers, checkpoints and the teacher's decoder.
The launch (ranks, devices, logging) is :mod:`repvit_sam.train.launch`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..config import VARIANTS, SamConfig, resolve_name
from ..train.launch import launch_from_env, log  # noqa: F401 (used by embed)
from ..weights import CheckpointError, StateDict, extract_state_dict, load_into, read_checkpoint


def model_config(name: str) -> SamConfig:
    """The :class:`SamConfig` of a variant of the variant table (official, test-size or alias)."""
    return VARIANTS[resolve_name(name)]


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
    if not cfg.tiny:
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
