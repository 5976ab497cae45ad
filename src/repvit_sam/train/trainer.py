"""The one training loop, shared by ``distill train`` (both phases) and ``finetune``.

A job hands :func:`fit` an *objective*: an ``nn.Module`` whose ``forward(batch)`` returns
``(loss, stats)`` for one micro-batch (``stats``: a dict of floats or 0-d tensors to log). The
loop does the rest:

* **Distributed:** the objective is wrapped in DDP (gloo on CPUs, NCCL on GPUs), so gradients
  of its trainable parameters are averaged over ranks; batch norm of a trainable encoder uses
  global-batch statistics (:mod:`.batchnorm`).
* **Data order:** :class:`~.schedule.MicroBatchSampler` (micro-batch ``m`` is a pure function of
  ``m``); an objective's own randomness (prompt sampling) comes from ``objective.generator``,
  re-seeded from (seed, micro-batch, rank) before each micro-batch, so it needs no saved state.
* **Step:** bf16 autocast when asked, gradient accumulation (DDP ``no_sync`` between micro-steps),
  optional gradient clipping, AdamW (no decay on biases and norms), linear warm-up then cosine.
* **Checkpoints:** ``RUN/checkpoints/last.pt`` every ``checkpoint_every`` steps and at the end,
  written atomically by rank 0 (model, optimiser, scheduler, step, every rank's RNG states; it
  loads with ``weights_only=True``); :func:`fit` with ``resume`` continues from it exactly.
* **Logs:** ``metrics.jsonl`` and TensorBoard (:class:`~.logs.Metrics`), a tqdm bar on rank 0,
  and each rank's peak memory in every train record (``peak_mem_gib_rank{r}``).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

import torch
import torch.distributed as dist
from torch import nn

from .launch import Launch, barrier, gather_objects, log
from .logs import Metrics, peak_memory_bytes
from .schedule import MicroBatchSampler, Recipe, WarmupCosine
from .state import CKPT_FORMAT, LAST, TrainingStateError, rng_state, save_checkpoint, set_rng_state

KILL_ENV = "REPVIT_SAM_TRAIN_KILL_AT_STEP"  # fault injection for tests: rank 0 SIGKILLs itself after this step
GIB = 2**30


@dataclass(frozen=True)
class ShardedValidation:
    """Validation split across ranks: ``part(step, rank, world_size)`` runs on every rank on its
    share of the held-out set and returns something picklable; rank 0 gathers every rank's part
    (in rank order) and ``combine(step, parts)`` makes the logged dict."""

    part: Callable[[int, int, int], Any]
    combine: Callable[[int, List[Any]], Dict[str, Any]]


@dataclass(frozen=True)
class Plan:
    """How long a run is: ``global_micro`` items per micro-step (all ranks), ``per_epoch_micro``
    micro-steps per epoch, ``total_steps`` optimiser steps."""

    global_micro: int
    per_epoch_micro: int
    total_steps: int

    def to_dict(self) -> Dict[str, int]:
        return {"global_micro": self.global_micro, "per_epoch_micro": self.per_epoch_micro, "total_steps": self.total_steps}


def make_plan(recipe: Recipe, world_size: int, n_train: int, steps: Optional[int], epochs: Optional[float],
              resume_total: int = 0, what: str = "training images") -> Plan:
    """Check the batch arithmetic and work out the run's length (``steps`` wins, then the
    length a resumed run was started with, then the recipe's epochs)."""
    if recipe.batch_size % (recipe.grad_accum * world_size):
        raise ValueError(
            f"batch size {recipe.batch_size} is not divisible by grad_accum {recipe.grad_accum} x "
            f"{world_size} ranks; change --batch-size or --grad-accum"
        )
    g = recipe.batch_size // recipe.grad_accum
    per_epoch = n_train // g
    if per_epoch == 0:
        raise TrainingStateError(f"{n_train} {what} are fewer than one micro-batch of {g}; add data or lower --batch-size")
    if steps:
        total = steps
    elif resume_total and epochs is None:
        total = resume_total
    else:
        total = max(1, int(math.ceil(recipe.epochs * per_epoch / recipe.grad_accum)))
    return Plan(g, per_epoch, int(total))


def micro_seed(seed: int, micro_batch: int, rank: int) -> int:
    """Seed of an objective's generator for one micro-batch on one rank."""
    return (seed * 1_000_003 + micro_batch) * 4099 + rank


def make_optimizer(params_module: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; no weight decay on biases and norm weights."""
    params = [p for p in params_module.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: every parameter is frozen")
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.lr, betas=tuple(recipe.betas),
    )


def fit(
    *,
    launch: Launch,
    run_dir: Path,
    kind: str,
    objective: nn.Module,
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    recipe: Recipe,
    plan: Plan,
    resume: Optional[Dict[str, Any]] = None,
    bf16: bool = False,
    workers: int = 0,
    collate: Optional[Callable] = None,
    meta: Optional[Dict[str, Any]] = None,
    validate: Optional[Union[Callable[[int], Dict[str, Any]], ShardedValidation]] = None,
    tb_extra: str = "distill",
) -> Dict[str, Any]:
    """Train ``objective`` (whose trainable parameters live in ``model``) for ``plan.total_steps``
    optimiser steps; checkpoint ``model.state_dict()`` as ``model``. Validation runs every
    ``recipe.val_every`` steps and at the end, and its dict is logged: a plain ``validate(step)``
    runs on rank 0 while the others wait; a :class:`ShardedValidation` runs its ``part`` on every
    rank and ``combine`` on rank 0. ``meta`` goes into every checkpoint. Returns the last
    validation record (rank 0) or {}."""
    ckpt_path = run_dir / "checkpoints" / LAST
    total = plan.total_steps
    ddp_model: nn.Module = objective
    if launch.distributed:
        ids = [launch.device.index] if launch.device.type == "cuda" else None
        ddp_model = nn.parallel.DistributedDataParallel(
            objective, device_ids=ids, find_unused_parameters=bool(getattr(objective, "find_unused_parameters", False)),
        )
    opt = make_optimizer(model, recipe)
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
    autocast = (lambda: torch.autocast(launch.device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    sampler = MicroBatchSampler(len(dataset), plan.global_micro, launch.rank, launch.world_size, recipe.seed,
                                step * recipe.grad_accum, total * recipe.grad_accum)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=workers, pin_memory=launch.device.type == "cuda",
        collate_fn=collate, persistent_workers=False,
    )
    metrics = Metrics(run_dir, launch.is_main, step, extra=tb_extra)
    generator: Optional[torch.Generator] = getattr(objective, "generator", None)

    def checkpoint() -> None:
        rngs = gather_objects(rng_state(launch.device), launch)
        if launch.is_main:
            epoch, pos = sampler.position(step * recipe.grad_accum)
            save_checkpoint(ckpt_path, {
                "format": CKPT_FORMAT, "kind": kind, "step": step, "total_steps": total,
                "epoch": epoch, "micro_batch_in_epoch": pos, "model": model.state_dict(),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rngs,
                "world_size": launch.world_size, "recipe": recipe.to_dict(), **(meta or {}),
            })
        barrier(launch)

    last_val: Dict[str, Any] = {}

    def run_validation() -> None:
        nonlocal last_val
        sharded = validate if isinstance(validate, ShardedValidation) else None
        res: Dict[str, Any] = {}
        if validate is not None and (sharded is not None or launch.is_main):
            was = objective.training
            objective.eval()
            try:
                if sharded is not None:
                    parts = gather_objects(sharded.part(step, launch.rank, launch.world_size), launch)
                    res = sharded.combine(step, parts) if launch.is_main else {}
                else:
                    res = validate(step)
            finally:
                objective.train(was)
        if launch.is_main and res:
            last_val = res
            metrics.write({"kind": "val", "step": step, **res})
            shown = {k: v for k, v in res.items() if isinstance(v, (int, float)) and not k.endswith(("_small", "_medium", "_large"))}
            log.info("step %d: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))
        barrier(launch)

    kill_at = int(os.environ.get(KILL_ENV, "0") or 0)
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=step, desc="train", unit="step", disable=not launch.is_main)
    batches = iter(loader)
    t0, seen = time.perf_counter(), 0
    objective.train()
    while step < total:
        opt.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=launch.device)
        stat_sums: Dict[str, float] = {}
        for a in range(recipe.grad_accum):
            batch = next(batches)
            if generator is not None:
                generator.manual_seed(micro_seed(recipe.seed, step * recipe.grad_accum + a, launch.rank))
            last = a == recipe.grad_accum - 1
            sync = ddp_model.no_sync() if (launch.distributed and not last) else contextlib.nullcontext()
            with sync:
                with autocast():
                    loss, stats = ddp_model(batch)
                (loss.float() / recipe.grad_accum).backward()
            loss_sum += loss.detach().float()
            for k, v in stats.items():
                stat_sums[k] = stat_sums.get(k, 0.0) + float(v)
            seen += len(batch[0]) if isinstance(batch, (tuple, list)) else 1
        if recipe.grad_clip > 0:
            nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], recipe.grad_clip)
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
            peaks = gather_objects(peak_memory_bytes(launch.device), launch)
            record = {"kind": "train", "step": step, "loss": loss_v, "lr": lr,
                      "epoch": step * recipe.grad_accum / plan.per_epoch_micro,
                      "items_per_s": seen * launch.world_size / max(elapsed, 1e-9), "time_s": round(elapsed, 4)}
            record.update({k: v / recipe.grad_accum for k, v in stat_sums.items()})  # rank 0's
            record.update({f"peak_mem_gib_rank{r}": round(p / GIB, 3) for r, p in enumerate(peaks)})
            metrics.write(record)
            bar.set_postfix(loss=f"{loss_v:.4g}")
        if kill_at and step == kill_at and launch.is_main:
            os.kill(os.getpid(), signal.SIGKILL)
        if step % recipe.checkpoint_every == 0 or step == total:
            checkpoint()
        if step % recipe.val_every == 0 or step == total:
            run_validation()
    bar.close()
    metrics.close()
    return last_val
