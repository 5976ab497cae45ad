"""``repvit-sam finetune``: train a SAM model on your own instance masks, with prompts.

Data (:mod:`.data`): a COCO instances JSON, a folder of SA-1B JSONs, or image + mask PNG pairs;
prepared once into ``RUN/prepared/`` (split across ranks, resumable), bad instances and images
skipped and counted. Training (:class:`~.objectives.PromptLoop` inside the one trainer
:func:`~.trainer.fit`): a jittered box or a uniform point per instance, then ``--rounds``
correction clicks from the error region with the previous logits as mask input; SAM's loss
(focal x20 + dice x1 on the best of the multimask outputs, IoU MSE x1). Validation
(:mod:`.validate`): box / 1 point / 1 point + k clicks mIoU on held-out images, overall and per
COCO area range. Output: ``RUN/model.pt``, an official-format checkpoint of ``--model``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import add_device_arg
from ..utils import non_negative_int, positive_int
from typing import TYPE_CHECKING, Any, Dict, List, Optional

if TYPE_CHECKING:
    from torch import nn

KIND = "repvit_sam.finetune"
PARTS = ("image_encoder", "prompt_encoder", "mask_decoder")
DEFAULT_TRAINABLE = "image_encoder,mask_decoder"


def parse_trainable(text: str) -> List[str]:
    """``image_encoder,mask_decoder`` / ``all`` -> the list of trainable parts (one-line error)."""
    from ..cli import UsageError

    parts = [p.strip().replace("-", "_") for p in text.split(",") if p.strip()]
    if parts == ["all"]:
        return list(PARTS)
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise UsageError(f"--trainable takes a comma-separated list of {', '.join(PARTS)} (or all), got {text!r}")
    return [p for p in PARTS if p in parts]


def add_training_arguments(p: argparse.ArgumentParser) -> None:
    """Options every trainer job shares (length, batch, optimiser, logging, precision, launch)."""
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=positive_int, help="optimiser steps (overrides the recipe's epochs)")
    length.add_argument("--epochs", type=float, help="epochs over the training images")
    p.add_argument("--resume", action="store_true", help="continue the run in the output folder from its last checkpoint")
    p.add_argument("--batch-size", type=positive_int, help="global batch per optimiser step (all ranks)")
    p.add_argument("--grad-accum", type=positive_int, help="micro-steps per optimiser step")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay")
    p.add_argument("--checkpoint-every", type=positive_int, help="optimiser steps between checkpoints")
    p.add_argument("--val-every", type=positive_int, help="optimiser steps between validations (and at the end)")
    p.add_argument("--log-every", type=positive_int, help="optimiser steps between log records")
    p.add_argument("--seed", type=int, help="data order, prompt sampling and initialisation seed")
    bf = p.add_mutually_exclusive_group()
    bf.add_argument("--bf16", dest="bf16", action="store_true", default=None, help="bf16 autocast (default: on for GPUs that support it)")
    bf.add_argument("--no-bf16", dest="bf16", action="store_false", help="full fp32")
    p.add_argument("--grad-checkpoint", action="store_true", help="activation checkpointing in the image encoder (less memory, ~30%% more compute)")
    p.add_argument("--workers", type=int, default=2, help="data-loading worker processes per rank (default 2)")
    add_device_arg(p)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, metavar="ANNOTATIONS",
                   help="COCO instances JSON, a folder of SA-1B JSONs, or a folder of instance-id mask PNGs")
    p.add_argument("--images", type=Path, help="image folder (default: beside the annotations)")
    p.add_argument("--model", required=True, help="model variant (repvit, vit_t, vit_b, ... or a test-size tiny_* one)")
    p.add_argument("--checkpoint", type=Path, help="initial weights (default: the official file; tiny_* start from random weights)")
    p.add_argument("-o", "--output", "--out", dest="output", type=Path, required=True, metavar="RUN",
                   help="run folder: prepared/, checkpoints/, metrics.jsonl, tb/, validation.json, clicks.png, model.pt")
    p.add_argument("--trainable", default=DEFAULT_TRAINABLE,
                   help=f"parts to train: comma-separated {', '.join(PARTS)}, or all (default {DEFAULT_TRAINABLE})")
    p.add_argument("--rounds", type=non_negative_int, default=2, help="correction rounds after the first prompt (default 2)")
    p.add_argument("--box-prob", type=float, default=0.5, help="probability that an instance's first prompt is a box, else a point (default 0.5)")
    p.add_argument("--max-instances", type=positive_int, default=8, help="instances drawn per image and step (default 8)")
    p.add_argument("--mask-loss", choices=("sam", "bce-dice"), default="sam",
                   help="mask loss: sam = SAM's focal x20 + dice x1 (default); bce-dice = BCE x5 + Dice x5, which learns much "
                        "faster from random initialisation (docs/finetune.md)")
    p.add_argument("--min-area", type=non_negative_int, default=16, help="skip instance masks smaller than this many pixels (default 16)")
    p.add_argument("--val-data", type=Path, help="held-out annotations (same layouts as --data); default: the last --val-count images of --data")
    p.add_argument("--val-images", type=Path, help="image folder of --val-data")
    p.add_argument("--val-count", type=non_negative_int, default=20, help="images held out of --data when there is no --val-data (default 20)")
    p.add_argument("--val-clicks", type=non_negative_int, default=4, help="correction clicks in validation (default 4)")
    add_training_arguments(p)


FINETUNE_RECIPE = dict(epochs=8.0, batch_size=8, lr=1e-4, weight_decay=0.01, warmup_fraction=0.05, grad_clip=1.0,
                       checkpoint_every=500, val_every=1000, log_every=10, val_images=0, val_prompts=0, seed=0)


def recipe_from_args(args: argparse.Namespace, base: Dict[str, Any], name: str):
    from .schedule import Recipe

    overrides = {k: getattr(args, k, None) for k in ("epochs", "batch_size", "grad_accum", "lr", "weight_decay",
                                                     "checkpoint_every", "val_every", "log_every", "seed")}
    return Recipe(name, **base).replace(**overrides)


def _check_args(args: argparse.Namespace) -> None:
    from ..cli import UsageError

    if not args.data.exists():
        raise UsageError(f"finetune: --data not found: {args.data}")
    if args.images is not None and not args.images.is_dir():
        raise UsageError(f"finetune: --images folder not found: {args.images}")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise UsageError(f"finetune: --checkpoint file not found: {args.checkpoint}")
    if args.val_data is not None and not args.val_data.exists():
        raise UsageError(f"finetune: --val-data not found: {args.val_data}")
    if not 0.0 <= args.box_prob <= 1.0:
        raise UsageError(f"finetune: --box-prob must be in [0, 1], got {args.box_prob}")
    parse_trainable(args.trainable)


def build_model(name: str, checkpoint: Optional[Path]) -> nn.Module:
    """``name`` with ``checkpoint``'s weights; without one, the official weights, or random
    weights for a test-size variant. A checkpoint that does not fit raises CheckpointError."""
    from ..config import VARIANTS, resolve_name
    from ..registry import build_sam
    from .launch import log

    key = resolve_name(name)
    if checkpoint is not None:
        return build_sam(key, checkpoint=checkpoint)
    if VARIANTS[key].tiny:
        log.info("%s has no official weights: starting from random initialisation", key)
        return build_sam(key)
    from ..hub import load_pretrained

    return load_pretrained(key)


def set_trainable(sam: nn.Module, trainable: List[str]) -> None:
    for part in PARTS:
        getattr(sam, part).requires_grad_(part in trainable)


def run(args: argparse.Namespace) -> int:
    from .launch import init_process_group, launch_from_env, teardown

    _check_args(args)
    launch = launch_from_env(args.device)
    init_process_group(launch)
    try:
        return _finetune(args, launch)
    finally:
        teardown(launch)


def _finetune(args: argparse.Namespace, launch) -> int:
    import torch

    from ..config import VARIANTS, resolve_name
    from ..registry import build_sam
    from ..utils import write_json_atomic
    from .batchnorm import checkpoint_blocks, convert_batchnorm
    from .data import DataError, PreparedDataset, prepare, read_entries, summarise
    from .launch import barrier, log
    from .objectives import PromptLoop, collate_prompt_batch
    from .state import LAST, TrainingStateError, load_checkpoint
    from .trainer import fit, make_plan
    from .validate import click_curve_png, coco_records, sharded_prompt_validation

    run_dir: Path = args.output
    ckpt_path = run_dir / "checkpoints" / LAST
    resume = None
    if args.resume:
        if not ckpt_path.exists():
            raise TrainingStateError(f"--resume: no checkpoint at {ckpt_path}; start without --resume")
        resume = load_checkpoint(ckpt_path, KIND)
        opts = resume["options"]
        if resolve_name(args.model) != opts["model"]:
            raise TrainingStateError(f"--model {args.model} differs from the run's model {opts['model']!r}")
    elif ckpt_path.exists():
        raise TrainingStateError(f"{run_dir} already holds a run; add --resume to continue it, or choose a new --output")
    name = resolve_name(args.model)
    cfg = VARIANTS[name]
    if resume is not None:
        from .schedule import Recipe

        recipe = Recipe.from_dict(resume["recipe"])
        opts = resume["options"]
    else:
        recipe = recipe_from_args(args, FINETUNE_RECIPE, "finetune")
        opts = {"model": name, "trainable": parse_trainable(args.trainable), "rounds": args.rounds, "box_prob": args.box_prob,
                "max_instances": args.max_instances, "min_area": args.min_area, "val_clicks": args.val_clicks,
                "mask_loss": args.mask_loss}

    # ---- data: read, hold out, prepare (ranks split the images; resumable)
    entries, layout = read_entries(args.data, args.images)
    if args.val_data is not None:
        val_entries, _ = read_entries(args.val_data, args.val_images)
        train_entries = entries
    else:
        n_val = min(args.val_count, len(entries) // 2)
        train_entries, val_entries = entries[: len(entries) - n_val], entries[len(entries) - n_val:]
    prep = run_dir / "prepared"
    if launch.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    barrier(launch)
    done_now, done_before = prepare(train_entries, cfg.img_size, opts["min_area"], prep, show_progress=launch.is_main)
    barrier(launch)
    summary = summarise(train_entries, prep)
    if launch.is_main:
        skipped = ", ".join(f"{v} {k}" for k, v in summary["skipped"].items()) or "none"
        log.info("data (%s): %d training images with %d instances; skipped: %s", layout, summary["images"], summary["instances"], skipped)
    if summary["instances"] == 0:
        raise DataError(f"no usable instance masks in {args.data} (skipped: {summary['skipped']}); check --images and --min-area")
    keys = [e.key for e in train_entries if (prep / f"{e.key}.npz").is_file()]
    sizes = [(e.height, e.width) for e in train_entries if (prep / f"{e.key}.npz").is_file()]

    # ---- model
    torch.manual_seed(recipe.seed)
    sam = build_model(name, args.checkpoint) if resume is None else build_sam(name)
    set_trainable(sam, opts["trainable"])
    if resume is not None:
        sam.load_state_dict(resume["model"], strict=True)
    sam = sam.to(launch.device)
    encoder_trains = "image_encoder" in opts["trainable"]
    if encoder_trains and (launch.distributed or args.grad_checkpoint):
        convert_batchnorm(sam.image_encoder)
    if encoder_trains and args.grad_checkpoint:
        checkpoint_blocks(sam.image_encoder)
    objective = PromptLoop(sam, rounds=opts["rounds"], box_prob=opts["box_prob"], max_instances=opts["max_instances"],
                           mask_loss=opts.get("mask_loss", "sam"))

    use_bf16 = args.bf16 if args.bf16 is not None else (launch.device.type == "cuda" and torch.cuda.is_bf16_supported())
    plan = make_plan(recipe, launch.world_size, len(keys), args.steps, args.epochs,
                     int(resume["total_steps"]) if resume is not None else 0)
    val_coco = coco_records(val_entries, opts["min_area"]) if val_entries else None  # every rank scores a share
    if launch.is_main:
        write_json_atomic(run_dir / "run.json", {
            "command": "finetune", "model": name, "checkpoint": str(args.checkpoint) if args.checkpoint else None,
            "data": str(Path(args.data).resolve()), "layout": layout, "options": opts, "recipe": recipe.to_dict(),
            "world_size": launch.world_size, "bf16": use_bf16, "device": launch.device.type, **plan.to_dict(),
            "train_data": summary, "val_images": len(val_coco["images"]) if val_coco else 0,
            "val_instances": len(val_coco["annotations"]) if val_coco else 0,
        })
    last_summary: Dict[str, Any] = {}

    def keep(step: int, res: Dict[str, Any]) -> None:
        nonlocal last_summary
        last_summary = {"step": step, **res}

    validate = sharded_prompt_validation(sam, val_coco, opts["val_clicks"], on_result=keep)

    dataset = PreparedDataset(prep, keys, sizes, cfg.img_size, cfg.pixel_mean, cfg.pixel_std)
    fit(launch=launch, run_dir=run_dir, kind=KIND, objective=objective, model=sam, dataset=dataset, recipe=recipe, plan=plan,
        resume=resume, bf16=use_bf16, workers=args.workers, collate=collate_prompt_batch, validate=validate,
        meta={"options": opts}, tb_extra="distill")

    if launch.is_main:
        out = run_dir / "model.pt"
        save_official(sam, name, out)
        if last_summary:
            write_json_atomic(run_dir / "validation.json", {
                "protocol": "coco-prompt: box = mask box; 1 point = farthest from the boundary, best of 3 by predicted IoU; "
                            "correction clicks at the farthest point of the larger error region",
                "area_ranges": "COCO: small < 32^2, medium 32^2..96^2, large >= 96^2 pixels (mask area at the original size)",
                **last_summary})
            click_curve_png(last_summary, opts["val_clicks"], run_dir / "clicks.png", f"{name}: mIoU vs clicks, step {last_summary['step']}")
        print(f"wrote {out}; it loads with build_sam(\"{name}\", checkpoint=\"{out}\")")
    barrier(launch)
    return 0


def save_official(sam: nn.Module, name: str, out: Path) -> None:
    """``sam``'s weights as a plain state_dict in the variant's key order (the official file
    layout), written atomically, then loaded back strictly with ``build_sam``."""
    import torch

    from ..registry import build_sam
    from ..utils import atomic_write

    reference = build_sam(name)
    own = sam.state_dict()
    state = {k: own[k].detach().clone().contiguous().cpu() for k in reference.state_dict()}
    with atomic_write(out) as f:
        torch.save(state, f)
    build_sam(name, checkpoint=out)
