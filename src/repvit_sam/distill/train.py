"""``repvit-sam distill train``: the student image encoder learns the teacher's embeddings.

* Data: the images of an embeddings folder (minus the last ``val_images``, held out), each with
  its stored teacher embedding; preprocessing is the inference path (:mod:`.data`).
* Order: epoch ``e`` visits a permutation drawn from ``seed + e``; a global micro-batch of
  ``batch_size / grad_accum`` images is split across ranks. Micro-batch ``m`` is therefore a pure
  function of ``m``: resuming at optimiser step ``s`` continues at micro-batch ``s * grad_accum``,
  and a 1-rank run sees the same global batches as a K-rank run.
* Step: MSE(student(x), teacher embedding) under bf16 autocast where supported, gradient
  accumulation (DDP ``no_sync`` between micro-steps), AdamW, linear warm-up then cosine decay.
* Distributed: DDP; batch norm uses global-batch statistics (SyncBatchNorm on GPUs,
  :class:`AllReduceBatchNorm2d` on CPUs).
* Checkpoints: ``RUN/checkpoints/last.pt`` every ``checkpoint_every`` steps and at the end,
  written atomically by rank 0: model, optimiser, scheduler, step, every rank's RNG states; it
  loads with ``weights_only=True``. ``--resume`` continues from it exactly.
* Logs: ``RUN/metrics.jsonl`` always; TensorBoard events in ``RUN/tb`` when tensorboard is
  installed. Validation: embedding MSE and mask mIoU of the teacher's decoder on student vs
  teacher embeddings (SA-1B boxes, else grid points).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import signal
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from ..utils import atomic_write, write_json_atomic
from .common import (
    Launch,
    barrier,
    build_decoder_sam,
    init_process_group,
    launch_from_env,
    log,
    read_state_dict,
    sync_batchnorm,
    teardown,
)
from .configs import Recipe, get_recipe, model_config
from .data import DataError, Preprocessor, grid_points, read_image, resolve_images, sa1b_boxes
from .shards import EmbeddingStore

CKPT_FORMAT = 1
LAST = "last.pt"
KILL_ENV = "REPVIT_SAM_DISTILL_KILL_AT_STEP"  # fault injection for tests: rank 0 SIGKILLs itself


# ------------------------------------------------------------------ schedule and data order
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


class PairDataset(torch.utils.data.Dataset):
    def __init__(self, paths: List[Path], store: EmbeddingStore, rows: List[int], pre: Preprocessor) -> None:
        self.paths, self.store, self.rows, self.pre = paths, store, rows, pre

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        x, _ = self.pre(read_image(self.paths[i]))
        return x, self.store[self.rows[i]]


# ------------------------------------------------------------------ RNG state (plain types)
def rng_state(device: torch.device) -> Dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: Dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# ------------------------------------------------------------------ logging
class Metrics:
    """Rank 0's logs: ``metrics.jsonl`` (always) and TensorBoard (when installed)."""

    def __init__(self, run: Path, enabled: bool, resume_step: int) -> None:
        self.enabled = enabled
        self.path = run / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        if self.path.exists():  # drop what a killed run logged after its last checkpoint
            keep = [ln for ln in self.path.read_text(encoding="utf-8").splitlines() if ln.strip() and json.loads(ln)["step"] <= resume_step]
            with atomic_write(self.path, "w") as f:
                f.write("".join(ln + "\n" for ln in keep))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run / "tb"), purge_step=resume_step + 1 if resume_step else None)
        except ImportError:
            log.warning("tensorboard is not installed: metrics go to %s only (pip install 'repvit-sam[distill]')", self.path)

    def write(self, record: Dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k not in ("step", "kind") and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{record['kind']}/{k}", v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


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


# ------------------------------------------------------------------ checkpoint
def save_checkpoint(path: Path, payload: Dict[str, Any]) -> None:
    with atomic_write(path) as f:
        torch.save(payload, f)


def load_checkpoint(path: Path) -> Dict[str, Any]:
    from ..weights import read_checkpoint

    ck = read_checkpoint(path)
    if not isinstance(ck, dict) or ck.get("kind") != "repvit_sam.distill" or ck.get("format") != CKPT_FORMAT:
        raise DataError(f"{path} is not a `repvit-sam distill train` checkpoint")
    return ck


def _gather(obj: Any, launch: Launch) -> List[Any]:
    if not launch.distributed:
        return [obj]
    out: List[Any] = [None] * launch.world_size
    dist.all_gather_object(out, obj)
    return out


# ------------------------------------------------------------------ main
def _plan(args: argparse.Namespace, recipe: Recipe, launch: Launch, n_train: int) -> Dict[str, int]:
    if recipe.batch_size % (recipe.grad_accum * launch.world_size):
        raise ValueError(
            f"batch size {recipe.batch_size} is not divisible by grad_accum {recipe.grad_accum} x "
            f"{launch.world_size} ranks; change --batch-size or --grad-accum"
        )
    g = recipe.batch_size // recipe.grad_accum
    per_epoch_micro = n_train // g
    if per_epoch_micro == 0:
        raise DataError(f"{n_train} training images are fewer than one micro-batch of {g}; add images or lower --batch-size")
    steps_per_epoch = per_epoch_micro / recipe.grad_accum
    if args.steps:
        total = args.steps
    elif args.resume_total and args.epochs is None:
        total = args.resume_total  # resuming: the length the run was started with
    else:
        total = max(1, int(math.ceil(recipe.epochs * steps_per_epoch)))
    return {"global_micro": g, "per_epoch_micro": per_epoch_micro, "total_steps": int(total)}


def run(args: argparse.Namespace) -> int:
    overrides = {
        "epochs": args.epochs, "batch_size": args.batch_size, "grad_accum": args.grad_accum, "lr": args.lr,
        "checkpoint_every": args.checkpoint_every, "val_every": args.val_every, "log_every": args.log_every,
        "val_images": args.val_images, "seed": args.seed, "weight_decay": args.weight_decay,
    }
    recipe = get_recipe(args.recipe, overrides)
    args.recipe_overrides = sorted(k for k, v in overrides.items() if v is not None)
    launch = launch_from_env(args.device)
    init_process_group(launch)
    try:
        return _train(args, recipe, launch)
    finally:
        teardown(launch)


def _train(args: argparse.Namespace, recipe: Recipe, launch: Launch) -> int:
    from ..registry import build_image_encoder

    run_dir: Path = args.out
    ckpt_path = run_dir / "checkpoints" / LAST
    resume = None
    if args.resume:
        if not ckpt_path.exists():
            raise DataError(f"--resume: no checkpoint at {ckpt_path}; start without --resume")
        resume = load_checkpoint(ckpt_path)
        recipe = Recipe(**{**resume["recipe"], "betas": tuple(resume["recipe"]["betas"])})
        if args.student not in (None, resume["student"]):
            raise DataError(f"--student {args.student} differs from the run's student {resume['student']!r}; drop --student to resume")
        args.student = resume["student"]
        ignored = [k for k in args.recipe_overrides if k != "epochs"]
        if ignored:
            log.warning("resuming with the run's own recipe: ignoring %s", ", ".join(f"--{k.replace('_', '-')}" for k in ignored))
    elif ckpt_path.exists():
        raise DataError(f"{run_dir} already holds a run; add --resume to continue it, or choose a new --out")
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
    args.resume_total = int(resume["total_steps"]) if resume is not None else 0
    plan = _plan(args, recipe, launch, n_train)
    total, g = plan["total_steps"], plan["global_micro"]

    torch.manual_seed(recipe.seed)
    encoder = build_image_encoder(cfg.encoder)
    if args.student_init is not None and resume is None:
        sd = read_state_dict(args.student_init, "--student-init")
        sd = {k[len("image_encoder."):]: v for k, v in sd.items() if k.startswith("image_encoder.")} or sd
        encoder.load_state_dict(sd, strict=True)
    if resume is not None:
        encoder.load_state_dict(resume["model"], strict=True)
    encoder = encoder.to(launch.device).train()
    if launch.distributed:
        encoder = sync_batchnorm(encoder, launch.device)
    model = encoder
    if launch.distributed:
        ids = [launch.device.index] if launch.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(encoder, device_ids=ids)

    decay = [p for p in encoder.parameters() if p.ndim > 1]
    no_decay = [p for p in encoder.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.lr, betas=tuple(recipe.betas),
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(total, int(recipe.warmup_fraction * total), recipe.min_lr_ratio))
    step = 0
    if resume is not None:
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        step = int(resume["step"])
        if resume["world_size"] == launch.world_size:
            set_rng_state(resume["rng"][launch.rank], launch.device)
        else:
            log.warning("resuming with %d ranks instead of %d: RNG states are not restored", launch.world_size, resume["world_size"])
        log.info("resumed from %s at step %d of %d", ckpt_path, step, total)

    use_bf16 = args.bf16 if args.bf16 is not None else (launch.device.type == "cuda" and torch.cuda.is_bf16_supported())
    autocast = (lambda: torch.autocast(launch.device.type, dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext

    pre = Preprocessor(cfg)
    sampler = MicroBatchSampler(n_train, g, launch.rank, launch.world_size, recipe.seed, step * recipe.grad_accum, total * recipe.grad_accum)
    loader = torch.utils.data.DataLoader(
        PairDataset(paths[:n_train], store, list(range(n_train)), pre),
        batch_sampler=sampler, num_workers=args.workers, pin_memory=launch.device.type == "cuda",
        persistent_workers=False,
    )
    decoder_sam = None
    teacher_ckpt = args.teacher_checkpoint or store.index.get("teacher_checkpoint")
    if launch.is_main and n_val:
        if teacher_ckpt and Path(teacher_ckpt).exists():
            tcfg = model_config(store.index["teacher"])
            decoder_sam = build_decoder_sam(tcfg, read_state_dict(Path(teacher_ckpt), "teacher checkpoint"), str(teacher_ckpt), launch.device)
        else:
            log.warning("no teacher checkpoint (--teacher-checkpoint): validation reports embedding MSE only, no mask mIoU")
    val_paths, val_targets = paths[n_train:], ([store[j] for j in range(n_train, len(store))] if launch.is_main else [])

    if launch.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / "run.json", {
            "student": args.student, "teacher": store.index["teacher"], "embeddings": str(Path(args.embeddings).resolve()),
            "images": str(Path(args.images).resolve()), "teacher_checkpoint": teacher_ckpt, "recipe": recipe.to_dict(),
            "world_size": launch.world_size, "train_images": n_train, "val_images": n_val, **plan, "bf16": use_bf16,
            "device": launch.device.type,
        })
    metrics = Metrics(run_dir, launch.is_main, step)
    log.info("%d train / %d val images, global batch %d (%d ranks x %d x %d accum), %d steps, bf16 %s",
             n_train, n_val, recipe.batch_size, launch.world_size, g // launch.world_size, recipe.grad_accum, total, use_bf16)

    def checkpoint() -> None:
        rngs = _gather(rng_state(launch.device), launch)
        if launch.is_main:
            epoch, pos = sampler.position(step * recipe.grad_accum)
            save_checkpoint(ckpt_path, {
                "format": CKPT_FORMAT, "kind": "repvit_sam.distill", "step": step, "total_steps": total,
                "epoch": epoch, "micro_batch_in_epoch": pos, "model": encoder.state_dict(),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rngs,
                "world_size": launch.world_size, "recipe": recipe.to_dict(), "student": args.student,
                "teacher": store.index["teacher"], "teacher_checkpoint": teacher_ckpt,
            })
        barrier(launch)

    def run_validation() -> None:
        if launch.is_main and n_val:
            res = validate(encoder, val_paths, val_targets, pre, decoder_sam, recipe.val_prompts, launch.device)
            metrics.write({"kind": "val", "step": step, **res})
            log.info("step %d: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in res.items()))
        barrier(launch)

    kill_at = int(os.environ.get(KILL_ENV, "0") or 0)
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=step, desc="train", unit="step", disable=not launch.is_main)
    batches = iter(loader)
    t0, seen = time.perf_counter(), 0
    while step < total:
        opt.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=launch.device)
        for a in range(recipe.grad_accum):
            x, target = next(batches)
            x, target = x.to(launch.device, non_blocking=True), target.to(launch.device, non_blocking=True)
            sync = contextlib.nullcontext() if (a == recipe.grad_accum - 1 or not launch.distributed) else model.no_sync()
            with sync:
                with autocast():
                    pred = model(x)
                loss = F.mse_loss(pred.float(), target)
                (loss / recipe.grad_accum).backward()
            loss_sum += loss.detach()
            seen += x.shape[0]
        if recipe.grad_clip > 0:
            nn.utils.clip_grad_norm_(encoder.parameters(), recipe.grad_clip)
        lr = sched.get_last_lr()[0]
        opt.step()
        sched.step()
        step += 1
        bar.update(1)
        if launch.distributed:
            dist.all_reduce(loss_sum)
        if step % recipe.log_every == 0 or step == total:
            elapsed = time.perf_counter() - t0
            loss_v = loss_sum.item() / (recipe.grad_accum * launch.world_size)
            metrics.write({"kind": "train", "step": step, "loss": loss_v, "lr": lr,
                           "epoch": step * recipe.grad_accum / plan["per_epoch_micro"],
                           "images_per_s": seen * launch.world_size / max(elapsed, 1e-9)})
            bar.set_postfix(loss=f"{loss_v:.4g}")
        if kill_at and step == kill_at and launch.is_main:
            os.kill(os.getpid(), signal.SIGKILL)
        if step % recipe.checkpoint_every == 0 or step == total:
            checkpoint()
        if step % recipe.val_every == 0 or step == total:
            run_validation()
    bar.close()
    metrics.close()
    if launch.is_main:
        print(f"trained {total} steps; checkpoint {ckpt_path}")
    return 0
