"""``repvit-sam distill train``: a student learns from a teacher, in two phases.

* ``--phase mse`` (phase 1, decoupled distillation as in MobileSAM / RepViT-SAM): the student
  image encoder learns the stored teacher embeddings under an MSE loss
  (:class:`~repvit_sam.train.objectives.EmbeddingMSE`). Data: the images of an embeddings folder
  (minus the last ``val_images``, held out), each with its stored embedding; preprocessing is the
  inference path (:mod:`.data`). Validation: embedding MSE and the mIoU between the masks the
  teacher's decoder makes from the student's and from the teacher's embeddings (SA-1B boxes, else
  grid points).
* ``--phase prompt`` (phase 2, prompt-in-the-loop distillation as in EdgeSAM): the whole student
  (encoder from ``--student-init``, prompt encoder and mask decoder from the teacher) learns the
  teacher decoder's masks for the same box or point prompts, thresholded at 0, over two
  correction rounds whose clicks fall where student and teacher disagree; loss BCE x5 + Dice x5;
  the prompt encoder is frozen (:class:`~repvit_sam.train.objectives.PromptLoop` with a teacher).
  Prompts come from instance masks (``--annotations``, default: SA-1B JSONs beside the images);
  the teacher's masks come from its stored embeddings. Validation on held-out images: the
  coco-prompt protocol against those masks (:mod:`repvit_sam.train.validate`).

Both run in the one trainer (:func:`repvit_sam.train.trainer.fit`): DDP, bf16, gradient
accumulation, atomic checkpoints (``RUN/checkpoints/last.pt``), exact ``--resume``,
``metrics.jsonl`` / TensorBoard, peak memory per rank.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..train.launch import Launch, barrier, init_process_group, launch_from_env, log, teardown
from ..train.schedule import Recipe
from ..train.state import LAST
from ..train.state import load_checkpoint as _load_checkpoint
from ..train.trainer import fit, make_plan
from ..utils import write_json_atomic
from .common import build_decoder_sam, model_config, read_state_dict
from .configs import get_recipe
from .data import DataError, Preprocessor, grid_points, read_image, resolve_images, sa1b_boxes
from .shards import EmbeddingStore

KIND = "repvit_sam.distill"
PHASES = ("mse", "prompt")


def load_checkpoint(path: Path) -> Dict[str, Any]:
    return _load_checkpoint(path, KIND)


class PairDataset(torch.utils.data.Dataset):
    def __init__(self, paths: List[Path], store: EmbeddingStore, rows: List[int], pre: Preprocessor) -> None:
        self.paths, self.store, self.rows, self.pre = paths, store, rows, pre

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        x, _ = self.pre(read_image(self.paths[i]))
        return x, self.store[self.rows[i]]


# ------------------------------------------------------------------ validation
@torch.no_grad()
def validate(encoder: nn.Module, paths: List[Path], targets: List[torch.Tensor], pre: Preprocessor,
             decoder_sam: Optional[nn.Module], prompts: int, device: torch.device) -> Dict[str, float]:
    """Embedding MSE, and mIoU between the masks the teacher's decoder makes from the student's
    and from the teacher's embeddings (``decoder_sam`` None: MSE only)."""
    was_training = encoder.training
    encoder.eval()
    mse, ious = [], []
    for path, target in zip(paths, targets):
        image = read_image(path)
        x, input_size = pre(image)
        s = encoder(x[None].to(device)).float()
        t = target[None].to(device)
        mse.append(F.mse_loss(s, t).item())
        if decoder_sam is None:
            continue
        original = image.shape[:2]
        boxes = sa1b_boxes(path.with_suffix(".json"), prompts)
        tr = pre.transform
        if boxes is not None:
            kw = {"points": None, "boxes": torch.as_tensor(tr.apply_boxes(boxes, original), dtype=torch.float, device=device), "masks": None}
        else:
            pts = torch.as_tensor(tr.apply_coords(grid_points(original, prompts), original), dtype=torch.float, device=device)
            kw = {"points": (pts, torch.ones(pts.shape[:2], dtype=torch.int, device=device)), "boxes": None, "masks": None}
        sparse, dense = decoder_sam.prompt_encoder(**kw)
        pe = decoder_sam.prompt_encoder.get_dense_pe()
        masks = []
        for emb in (s, t):
            low, _ = decoder_sam.mask_decoder(emb, pe, sparse, dense, multimask_output=False)
            masks.append(decoder_sam.postprocess_masks(low, input_size, original)[:, 0] > decoder_sam.mask_threshold)
        inter = (masks[0] & masks[1]).flatten(1).sum(1).double()
        union = (masks[0] | masks[1]).flatten(1).sum(1).double()
        ious.extend(torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)).tolist())
    encoder.train(was_training)
    out = {"val_mse": float(np.mean(mse)), "val_images": len(paths)}
    if ious:
        out["val_miou"] = float(np.mean(ious))
        out["val_prompts"] = len(ious)
    return out



# ------------------------------------------------------------------ main
def run(args: argparse.Namespace) -> int:
    overrides = {
        "epochs": args.epochs, "batch_size": args.batch_size, "grad_accum": args.grad_accum, "lr": args.lr,
        "checkpoint_every": args.checkpoint_every, "val_every": args.val_every, "log_every": args.log_every,
        "val_images": args.val_images, "seed": args.seed, "weight_decay": args.weight_decay,
    }
    recipe_name = args.recipe or ("prompt" if args.phase == "prompt" else "paper")
    recipe = get_recipe(recipe_name, overrides)
    args.recipe_overrides = sorted(k for k, v in overrides.items() if v is not None)
    launch = launch_from_env(args.device)
    init_process_group(launch)
    try:
        return _train(args, recipe, launch)
    finally:
        teardown(launch)


def _train(args: argparse.Namespace, recipe: Recipe, launch: Launch) -> int:
    run_dir: Path = args.output
    ckpt_path = run_dir / "checkpoints" / LAST
    resume = None
    if args.resume:
        if not ckpt_path.exists():
            raise DataError(f"--resume: no checkpoint at {ckpt_path}; start without --resume")
        resume = load_checkpoint(ckpt_path)
        recipe = Recipe.from_dict(resume["recipe"])
        if args.student not in (None, resume["student"]):
            raise DataError(f"--student {args.student} differs from the run's student {resume['student']!r}; drop --student to resume")
        args.student = resume["student"]
        args.phase = resume.get("phase", "mse")
        ignored = [k for k in args.recipe_overrides if k != "epochs"]
        if ignored:
            log.warning("resuming with the run's own recipe: ignoring %s", ", ".join(f"--{k.replace('_', '-')}" for k in ignored))
    elif ckpt_path.exists():
        raise DataError(f"{run_dir} already holds a run; add --resume to continue it, or choose a new --output")
    if args.student is None:
        args.student = "repvit"

    store = EmbeddingStore(args.embeddings, verify=False)
    cfg = model_config(args.student)
    if tuple(store.embed_shape) != (cfg.encoder.out_chans, cfg.decoder.image_embedding_size, cfg.decoder.image_embedding_size) \
            or store.index["img_size"] != cfg.img_size:
        raise DataError(
            f"student {args.student!r} makes {cfg.encoder.out_chans}x{cfg.decoder.image_embedding_size}^2 embeddings at "
            f"{cfg.img_size} px; the teacher embeddings are {store.embed_shape} at {store.index['img_size']} px"
        )
    if not args.no_verify:
        if launch.is_main:
            log.info("checking the SHA-256 of %d shard(s) (skip with --no-verify)", len(store.index["shards"]))
            store.verify_all()
        barrier(launch)
    paths = resolve_images(args.images, store.keys)
    n_val = min(recipe.val_images, len(store) // 2)
    n_train = len(store) - n_val
    teacher_ckpt = args.teacher_checkpoint or store.index.get("teacher_checkpoint")
    teacher_ckpt = str(teacher_ckpt) if teacher_ckpt else None
    if args.phase == "prompt":
        return _train_prompt(args, recipe, launch, store, cfg, paths, n_val, teacher_ckpt, resume, ckpt_path)
    plan = make_plan(recipe, launch.world_size, n_train, args.steps, args.epochs,
                     int(resume["total_steps"]) if resume is not None else 0)

    from ..registry import build_image_encoder
    from ..train.batchnorm import checkpoint_blocks, convert_batchnorm
    from ..train.objectives import EmbeddingMSE

    torch.manual_seed(recipe.seed)
    encoder = build_image_encoder(cfg.encoder)
    if args.student_init is not None and resume is None:
        encoder.load_state_dict(_encoder_state(read_state_dict(args.student_init, "--student-init")), strict=True)
    if resume is not None:
        encoder.load_state_dict(resume["model"], strict=True)
    encoder = encoder.to(launch.device).train()
    if launch.distributed or args.grad_checkpoint:
        _, n_bn = convert_batchnorm(encoder)
        if launch.distributed and n_bn:
            log.info("batch norm uses global-batch statistics across %d ranks (TrainBatchNorm2d)", launch.world_size)
    if args.grad_checkpoint:
        log.info("activation checkpointing on %d encoder blocks", checkpoint_blocks(encoder))
    use_bf16 = _bf16(args, launch)
    pre = Preprocessor(cfg)
    decoder_sam = None
    if launch.is_main and n_val:
        if teacher_ckpt and Path(teacher_ckpt).exists():
            tcfg = model_config(store.index["teacher"])
            decoder_sam = build_decoder_sam(tcfg, read_state_dict(Path(teacher_ckpt), "teacher checkpoint"), str(teacher_ckpt), launch.device)
        else:
            log.warning("no teacher checkpoint (--teacher-checkpoint): validation reports embedding MSE only, no mask mIoU")
    val_paths, val_targets = paths[n_train:], ([store[j] for j in range(n_train, len(store))] if launch.is_main else [])
    meta = {"student": args.student, "teacher": store.index["teacher"], "teacher_checkpoint": teacher_ckpt, "phase": "mse"}
    _write_run_json(args, launch, run_dir, store, recipe, plan, use_bf16, n_train, n_val, meta)
    log.info("%d train / %d val images, global batch %d (%d ranks x %d x %d accum), %d steps, bf16 %s",
             n_train, n_val, recipe.batch_size, launch.world_size, plan.global_micro // launch.world_size,
             recipe.grad_accum, plan.total_steps, use_bf16)

    def run_validation(step: int) -> Dict[str, Any]:
        if not n_val:
            return {}
        return validate(encoder, val_paths, val_targets, pre, decoder_sam, recipe.val_prompts, launch.device)

    fit(launch=launch, run_dir=run_dir, kind=KIND, objective=EmbeddingMSE(encoder), model=encoder,
        dataset=PairDataset(paths[:n_train], store, list(range(n_train)), pre), recipe=recipe, plan=plan, resume=resume,
        bf16=use_bf16, workers=args.workers, meta=meta, validate=run_validation)
    if launch.is_main:
        print(f"trained {plan.total_steps} steps; checkpoint {ckpt_path}")
    return 0


def _bf16(args: argparse.Namespace, launch: Launch) -> bool:
    return args.bf16 if args.bf16 is not None else (launch.device.type == "cuda" and torch.cuda.is_bf16_supported())


def _encoder_state(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``image_encoder.*`` of a full checkpoint (prefix dropped), or a bare encoder state_dict."""
    return {k[len("image_encoder."):]: v for k, v in sd.items() if k.startswith("image_encoder.")} or sd


def _write_run_json(args, launch, run_dir, store, recipe, plan, use_bf16, n_train, n_val, meta) -> None:
    if launch.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / "run.json", {
            **meta, "embeddings": str(Path(args.embeddings).resolve()), "images": str(Path(args.images).resolve()),
            "recipe": recipe.to_dict(), "world_size": launch.world_size, "train_images": n_train, "val_images": n_val,
            **plan.to_dict(), "bf16": use_bf16, "device": launch.device.type,
        })


class PromptDistillDataset(torch.utils.data.Dataset):
    """Prepared images and masks (:class:`repvit_sam.train.data.PreparedDataset`) with each
    image's stored teacher embedding: (x, masks, scale, embedding)."""

    def __init__(self, prepared, store: EmbeddingStore, rows: List[int]) -> None:
        self.prepared, self.store, self.rows = prepared, store, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        x, masks, scale = self.prepared[i]
        return x, masks, scale, self.store[self.rows[i]]


def _train_prompt(args, recipe, launch, store, cfg, paths, n_val, teacher_ckpt, resume, ckpt_path) -> int:
    """Phase 2 (see the module doc)."""
    from ..registry import build_from_config
    from ..train.batchnorm import checkpoint_blocks, convert_batchnorm
    from ..train.data import PreparedDataset, prepare, read_entries, summarise
    from ..train.finetune import parse_trainable, set_trainable
    from ..train.objectives import PromptLoop, collate_prompt_batch
    from ..train.validate import coco_records, sharded_prompt_validation

    run_dir: Path = args.output
    if not teacher_ckpt or not Path(teacher_ckpt).exists():
        raise DataError("--phase prompt needs the teacher's full checkpoint (--teacher-checkpoint): its decoder makes the target masks")
    if resume is None and args.student_init is None:
        raise DataError("--phase prompt starts from a phase-1 student: pass --student-init (a `distill export` file or its encoder)")
    teacher_sd = read_state_dict(Path(teacher_ckpt), "teacher checkpoint")
    tcfg = model_config(store.index["teacher"])
    if tcfg.decoder != cfg.decoder:
        raise DataError(f"teacher {store.index['teacher']!r} and student {args.student!r} have different prompt encoder / mask decoder configs")
    if args.annotations is None and not any(Path(args.images).glob("*.json")):
        raise DataError(f"--phase prompt needs instance masks for its prompts: no SA-1B JSONs beside the images in {args.images}; "
                        "pass --annotations (COCO JSON, SA-1B folder or mask PNGs)")
    entries, layout = read_entries(args.annotations or args.images, args.images)
    by_key = {e.key: e for e in entries}
    keys = store.keys
    missing = [k for k in keys if k not in by_key]
    if len(missing) == len(keys):
        raise DataError(f"no annotations for the embeddings' images in {args.annotations or args.images}; pass --annotations")
    opts = resume["options"] if resume is not None else {
        "trainable": parse_trainable(args.trainable), "rounds": 2, "box_prob": 0.5, "max_instances": args.max_instances, "min_area": 16,
        "val_clicks": 2}
    n_train = len(keys) - n_val
    train_rows = [j for j in range(n_train) if keys[j] in by_key]
    prep = run_dir / "prepared"
    if launch.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    barrier(launch)
    train_entries = [by_key[keys[j]] for j in train_rows]
    prepare(train_entries, cfg.img_size, opts["min_area"], prep, show_progress=launch.is_main)
    barrier(launch)
    summary = summarise(train_entries, prep)
    if launch.is_main:
        log.info("prompts from %s annotations: %d images, %d instances; skipped: %s", layout, summary["images"], summary["instances"],
                 ", ".join(f"{v} {k}" for k, v in summary["skipped"].items()) or "none")
    rows = [j for j in train_rows if (prep / f"{keys[j]}.npz").is_file()]
    prepared = PreparedDataset(prep, [keys[j] for j in rows], [(by_key[keys[j]].height, by_key[keys[j]].width) for j in rows],
                               cfg.img_size, cfg.pixel_mean, cfg.pixel_std)
    plan = make_plan(recipe, launch.world_size, len(rows), args.steps, args.epochs,
                     int(resume["total_steps"]) if resume is not None else 0, what="annotated training images")

    torch.manual_seed(recipe.seed)
    student = build_from_config(cfg)
    from .common import decoder_state

    dec = decoder_state(teacher_sd, str(teacher_ckpt))
    student.load_state_dict({**student.state_dict(), **dec}, strict=True)
    if resume is None:
        student.image_encoder.load_state_dict(_encoder_state(read_state_dict(args.student_init, "--student-init")), strict=True)
    else:
        student.load_state_dict(resume["model"], strict=True)
    set_trainable(student, opts["trainable"])
    student = student.to(launch.device)
    if "image_encoder" in opts["trainable"] and (launch.distributed or args.grad_checkpoint):
        convert_batchnorm(student.image_encoder)
    if "image_encoder" in opts["trainable"] and args.grad_checkpoint:
        checkpoint_blocks(student.image_encoder)
    teacher = build_decoder_sam(tcfg, teacher_sd, str(teacher_ckpt), launch.device)
    objective = PromptLoop(student, rounds=opts["rounds"], box_prob=opts["box_prob"], max_instances=opts["max_instances"], teacher=teacher)
    use_bf16 = _bf16(args, launch)
    val_entries = [by_key[k] for k in keys[n_train:] if k in by_key]
    val_coco = coco_records(val_entries, opts["min_area"]) if val_entries else None  # every rank scores a share
    meta = {"student": args.student, "teacher": store.index["teacher"], "teacher_checkpoint": str(teacher_ckpt), "phase": "prompt",
            "options": opts}
    _write_run_json(args, launch, run_dir, store, recipe, plan, use_bf16, len(rows), n_val, {**meta, "train_data": summary})

    run_validation = sharded_prompt_validation(student, val_coco, opts["val_clicks"])
    fit(launch=launch, run_dir=run_dir, kind=KIND, objective=objective, model=student,
        dataset=PromptDistillDataset(prepared, store, rows), recipe=recipe, plan=plan, resume=resume, bf16=use_bf16,
        workers=args.workers, collate=collate_prompt_batch, meta=meta, validate=run_validation)
    if launch.is_main:
        print(f"trained {plan.total_steps} steps (phase 2, prompt-in-the-loop); checkpoint {ckpt_path}")
    return 0
