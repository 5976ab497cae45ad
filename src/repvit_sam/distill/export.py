"""``repvit-sam distill export``: a trained run -> an official-format SAM checkpoint.

The file is a flat state_dict with the student's ``image_encoder.*`` and the teacher's
``prompt_encoder.*`` and ``mask_decoder.*``, keys and shapes exactly those of the student
variant (for ``repvit``: those of the official ``repvit_sam.pt``), so that
``build_sam("repvit", checkpoint=FILE)`` loads it strictly.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..utils import atomic_write
from ..weights import load_into, read_checkpoint, extract_state_dict
from .common import decoder_state, read_state_dict
from .configs import is_registered, model_config
from .train import LAST, load_checkpoint


def export(run: Path, teacher_checkpoint: Path, out: Path) -> str:
    """Write ``out``; returns the student's model name. Raises CheckpointError / DataError."""
    from ..registry import build_from_config, build_sam

    ck = load_checkpoint(Path(run) / "checkpoints" / LAST)
    student = ck["student"]
    cfg = model_config(student)
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
    # The file must load strictly the way users will load it.
    if is_registered(student):
        build_sam(student, checkpoint=out)
    else:
        load_into(build_from_config(cfg), extract_state_dict(read_checkpoint(out), source=str(out)), variant=student, source=str(out))
    return student


def run(args: argparse.Namespace) -> int:
    student = export(args.run, args.teacher_checkpoint, args.output)
    how = f'build_sam("{student}", checkpoint="{args.output}")' if is_registered(student) else "build_from_config(...)"
    print(f"wrote {args.output}; it loads strictly with {how}")
    return 0
