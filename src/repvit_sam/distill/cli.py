"""``repvit-sam distill {embed,train,export}``: argument parsing only (light imports); the work
is imported inside each run function."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import add_device_arg, add_output_arg
from ..utils import positive_int


def _run(module: str):
    def call(args: argparse.Namespace) -> int:
        import importlib

        from ..cli import UsageError

        for name in ("images", "embeddings", "run"):
            path = getattr(args, name, None)
            if path is not None and not Path(path).is_dir():
                raise UsageError(f"distill {args.distill_command}: --{name} folder not found: {path}")
        for name in ("teacher_checkpoint", "student_init"):
            path = getattr(args, name, None)
            if path is not None and not Path(path).is_file():
                raise UsageError(f"distill {args.distill_command}: --{name.replace('_', '-')} file not found: {path}")
        return importlib.import_module(f".{module}", __package__).run(args)

    return call


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Decoupled distillation (MobileSAM / RepViT-SAM): store a teacher's image embeddings, train a
    student encoder on them with an MSE loss, export an official-format checkpoint. embed and train
    run under torchrun: torchrun --nproc_per_node K -m repvit_sam distill ..."""
    dsub = p.add_subparsers(dest="distill_command", metavar="STEP", parser_class=type(p))
    dsub.required = True

    e = dsub.add_parser("embed", help="teacher image embeddings -> fp16 shards with an index and checksums")
    e.add_argument("--teacher", default="vit_h", help="teacher model: a variant of the table (default vit_h; tiny_* for smoke runs)")
    e.add_argument("--teacher-checkpoint", type=Path, help="teacher weights (default: the official file, cached or downloaded)")
    e.add_argument("--images", type=Path, required=True, help="image folder (SA-1B layout sa_N.jpg + sa_N.json, or any images)")
    add_output_arg(e, "embeddings folder (created; re-run to resume)")
    e.add_argument("--shard-size", type=positive_int, default=256, help="images per shard (default 256: 512 MiB at 256x64x64 fp16)")
    e.add_argument("--batch-size", type=positive_int, default=4, help="images per teacher forward pass (default 4)")
    e.add_argument("--limit", type=positive_int, help="only the first N images (sorted by name)")
    e.add_argument("--workers", type=int, default=2, help="image-decoding worker processes per rank (default 2)")
    add_device_arg(e)
    e.set_defaults(step=_run("embed"))

    t = dsub.add_parser("train", help="train a student image encoder on stored teacher embeddings (DDP under torchrun)")
    t.add_argument("--embeddings", type=Path, required=True, help="folder written by `distill embed`")
    t.add_argument("--images", type=Path, required=True, help="the image folder the embeddings were computed from")
    t.add_argument("--student", help="student model (default repvit; tiny_repvit for smoke runs; resuming: the run's)")
    t.add_argument("--phase", choices=("mse", "prompt"), default="mse",
                   help="mse: phase 1, embedding MSE (default); prompt: phase 2, prompt-in-the-loop distillation of masks (EdgeSAM)")
    t.add_argument("--annotations", type=Path, help="phase 2: instance masks for the prompts (COCO JSON, SA-1B folder or mask PNGs; "
                   "default: SA-1B JSONs beside the images)")
    t.add_argument("--trainable", default="image_encoder,mask_decoder",
                   help="phase 2: parts to train (default image_encoder,mask_decoder; the prompt encoder stays frozen)")
    t.add_argument("--max-instances", type=positive_int, default=8, help="phase 2: instances drawn per image and step (default 8)")
    t.add_argument("--grad-checkpoint", action="store_true", help="activation checkpointing in the student encoder (less memory)")
    add_output_arg(t, "run folder: checkpoints/, metrics.jsonl, tb/")
    t.add_argument("--recipe", help="training recipe: paper (phase 1 default), prompt (phase 2 default) or tiny (resuming: the run's)")
    length = t.add_mutually_exclusive_group()
    length.add_argument("--steps", type=positive_int, help="optimiser steps (overrides the recipe's epochs)")
    length.add_argument("--epochs", type=float, help="epochs (default: the recipe's, 8 for paper)")
    t.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    t.add_argument("--batch-size", type=positive_int, help="global batch per optimiser step (all ranks)")
    t.add_argument("--grad-accum", type=positive_int, help="micro-steps per optimiser step")
    t.add_argument("--lr", type=float, help="peak learning rate")
    t.add_argument("--weight-decay", type=float, help="AdamW weight decay")
    t.add_argument("--checkpoint-every", type=positive_int, help="optimiser steps between checkpoints")
    t.add_argument("--val-every", type=positive_int, help="optimiser steps between validations (and at the end)")
    t.add_argument("--log-every", type=positive_int, help="optimiser steps between log records")
    t.add_argument("--val-images", type=int, help="images held out for validation (the last ones)")
    t.add_argument("--seed", type=int, help="data order and initialisation seed")
    t.add_argument("--teacher-checkpoint", type=Path, help="teacher weights for mask mIoU (default: the one embed used)")
    t.add_argument("--student-init", type=Path, help="initial student weights (image_encoder.* of a checkpoint, or a bare encoder state_dict)")
    bf = t.add_mutually_exclusive_group()
    bf.add_argument("--bf16", dest="bf16", action="store_true", default=None, help="bf16 autocast (default: on for GPUs that support it)")
    bf.add_argument("--no-bf16", dest="bf16", action="store_false", help="full fp32")
    t.add_argument("--no-verify", action="store_true", help="skip the shards' SHA-256 check")
    t.add_argument("--workers", type=int, default=2, help="data-loading worker processes per rank (default 2)")
    add_device_arg(t)
    t.set_defaults(step=_run("train"))

    x = dsub.add_parser("export", help="run -> official-format checkpoint (student encoder + teacher decoder)")
    x.add_argument("--run", type=Path, required=True, help="run folder of `distill train`")
    x.add_argument("--teacher-checkpoint", type=Path, help="the teacher's full SAM checkpoint (prompt encoder, mask decoder); "
                   "needed for phase-1 runs, whose checkpoint holds the encoder only")
    add_output_arg(x, "checkpoint file to write")
    x.set_defaults(step=_run("export"))


def run(args: argparse.Namespace) -> int:
    return int(args.step(args))

