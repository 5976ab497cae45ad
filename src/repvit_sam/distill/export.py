"""``repvit-sam distill export``: a trained run -> an official-format SAM checkpoint.

The file is a flat state_dict with the student's ``image_encoder.*`` and the teacher's
``prompt_encoder.*`` and ``mask_decoder.*``, keys and shapes exactly those of the student
variant (for ``repvit``: those of the official ``repvit_sam.pt``), so that
``build_sam("repvit", checkpoint=FILE)`` loads it strictly.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

import torch

from ..utils import atomic_write
from ..weights import load_into
from .data import DataError
from .common import decoder_state, model_config, read_state_dict
from .train import LAST, load_checkpoint


def export(run: Path, teacher_checkpoint: Optional[Path], out: Path) -> str:
    """Write ``out``; returns the student's model name. A phase-1 run holds the student encoder
    only: the prompt encoder and mask decoder come from ``teacher_checkpoint``. A phase-2 run
    holds the whole student. Raises CheckpointError / DataError."""
    from ..registry import build_from_config, build_sam

    ck = load_checkpoint(Path(run) / "checkpoints" / LAST)
    student = ck["student"]
    cfg = model_config(student)
    if ck.get("phase", "mse") == "prompt":
        sd = dict(ck["model"])
    else:
        if teacher_checkpoint is None:
            raise DataError(f"{run} is a phase-1 run (student encoder only): pass --teacher-checkpoint for the prompt encoder and mask decoder")
        teacher_cfg = model_config(ck["teacher"])
        if teacher_cfg.decoder != cfg.decoder:
            raise ValueError(f"teacher {ck['teacher']!r} and student {student!r} have different prompt encoder / mask decoder configs")
        sd = {f"image_encoder.{k}": v for k, v in ck["model"].items()}
        sd.update(decoder_state(read_state_dict(teacher_checkpoint, "--teacher-checkpoint"), str(teacher_checkpoint)))
    model = build_from_config(cfg)
    load_into(model, sd, variant=student, source=f"{run} + {teacher_checkpoint}")
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    with atomic_write(out) as f:
        torch.save(state, f)
    build_sam(student, checkpoint=out)  # the file must load strictly the way users will load it
    return student


def run(args: argparse.Namespace) -> int:
    student = export(args.run, args.teacher_checkpoint, args.output)
    print(f'wrote {args.output}; it loads strictly with build_sam("{student}", checkpoint="{args.output}")')
    return 0
