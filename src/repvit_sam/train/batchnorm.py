"""Batch norm for training: global-batch statistics across ranks without extra activation
copies, and running statistics that activation checkpointing does not update twice.

:class:`TrainBatchNorm2d` replaces ``nn.BatchNorm2d`` during training (same parameters and
buffers, so checkpoints are unchanged). With more than one rank its statistics are those of the
global batch: the per-channel sums go through one all-reduce in the forward pass and one in the
backward pass (what ``torch.nn.SyncBatchNorm`` does on GPUs; SyncBatchNorm refuses CPU tensors).
The normalisation is one autograd function that saves only its input (which the convolution
before it holds anyway) and per-channel vectors: an autograd-traced formula would also keep the
centred input, the normalised input and the scaled output, about three more activation-sized
tensors per layer.

:func:`checkpoint_blocks` turns on activation checkpointing for an image encoder's blocks.
A checkpointed block runs its forward pass twice; the second run (in the backward pass) leaves
the running statistics alone.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

_STATE = threading.local()


def _recomputing() -> bool:
    return bool(getattr(_STATE, "recomputing", False))


@contextlib.contextmanager
def _recompute_context() -> Iterator[None]:
    prev = _recomputing()
    _STATE.recomputing = True
    try:
        yield
    finally:
        _STATE.recomputing = prev


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(t)
    return t


class _GlobalBatchNorm(torch.autograd.Function):
    """y = (x - mean) * invstd * weight + bias with mean / invstd over all ranks' batches.

    x: (B, C, H, W). Saves x, weight, mean and invstd; the backward pass all-reduces two
    per-channel sums and returns the exact gradient of the global-batch normalisation."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, stats_out: list):
        c = x.shape[1]
        dims = (0, 2, 3)
        xf = x.float() if x.dtype != torch.float32 else x
        count = torch.tensor([xf.numel() // c], dtype=torch.float32, device=x.device)
        s = torch.cat([xf.sum(dims), count])
        _all_reduce(s)
        n = float(s[-1].item())
        mean = s[:c] / n
        var = (xf - mean.view(1, c, 1, 1)).square_().sum(dims)
        var = _all_reduce(var) / n
        invstd = torch.rsqrt(var + eps)
        scale = invstd * weight.float()
        shift = bias.float() - mean * scale
        y = xf * scale.view(1, c, 1, 1)
        y.add_(shift.view(1, c, 1, 1))
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.n = n
        stats_out.extend([mean.detach(), var.detach(), n])
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, weight, mean, invstd = ctx.saved_tensors
        c = x.shape[1]
        dims = (0, 2, 3)
        gf, xf = g.float(), x.float()
        sum_dy = gf.sum(dims)
        sum_dy_x = (gf * xf).sum(dims)
        sum_dy_xmu = sum_dy_x - mean * sum_dy  # sum of g * (x - mean), this rank's part
        grad_weight = sum_dy_xmu * invstd
        grad_bias = sum_dy
        both = _all_reduce(torch.cat([sum_dy, sum_dy_xmu]))
        n = ctx.n
        w = weight.float()
        k1 = invstd * w
        k2 = -(invstd ** 3) * w * both[c:] / n
        k3 = -k1 * both[:c] / n - mean * k2
        gi = gf * k1.view(1, c, 1, 1)
        gi.addcmul_(xf, k2.view(1, c, 1, 1))
        gi.add_(k3.view(1, c, 1, 1))
        return gi.to(x.dtype), grad_weight.to(weight.dtype), grad_bias.to(weight.dtype), None, None


class TrainBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` for training runs (see the module doc): global-batch statistics
    across ranks when a process group of more than one rank exists, and no running-statistics
    update while a checkpointed block is recomputed. Eval mode is plain BatchNorm2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        update = self.track_running_stats and not _recomputing()
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            if update:
                self.num_batches_tracked.add_(1)
            m = self.momentum if self.momentum is not None else 1.0 / float(max(int(self.num_batches_tracked), 1))
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, True,
                                m if update else 0.0, self.eps)
        stats: list = []
        y = _GlobalBatchNorm.apply(x, self.weight, self.bias, self.eps, stats)
        if update:
            mean, var, n = stats
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_((var * (n / max(n - 1, 1))).to(self.running_var.dtype), alpha=m)
        return y


def convert_batchnorm(model: nn.Module) -> Tuple[nn.Module, int]:
    """Replace every ``nn.BatchNorm2d`` in ``model`` by :class:`TrainBatchNorm2d` (in place;
    parameters and buffers carried over). Returns (model, number replaced)."""
    n = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.BatchNorm2d:
                new = TrainBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
                new.load_state_dict(child.state_dict())
                new = new.to(child.weight.device if child.affine else child.running_mean.device)
                new.train(child.training)
                setattr(parent, name, new)
                n += 1
    return model, n


def _block_lists(encoder: nn.Module) -> Iterator[nn.ModuleList]:
    """The sequences of blocks of an image encoder: RepViT's ``features``, ViT's ``blocks``,
    TinyViT's ``layers[i].blocks``."""
    for name, m in encoder.named_modules():
        if isinstance(m, nn.ModuleList) and name.split(".")[-1] in ("features", "blocks"):
            yield m


def checkpoint_blocks(encoder: nn.Module) -> int:
    """Activation checkpointing on every block of ``encoder`` (in place; state_dict keys are
    unchanged): a block keeps only its input for the backward pass and recomputes the rest.
    Returns the number of blocks wrapped."""
    from torch.utils.checkpoint import checkpoint

    n = 0
    for blocks in _block_lists(encoder):
        for block in blocks:
            if getattr(block, "_checkpointed", False):
                continue
            inner = block.forward

            def forward(*args, _inner=inner, **kwargs):
                if not torch.is_grad_enabled():
                    return _inner(*args, **kwargs)
                return checkpoint(_inner, *args, use_reentrant=False,
                                  context_fn=lambda: (contextlib.nullcontext(), _recompute_context()), **kwargs)

            block.forward = forward
            block._checkpointed = True
            n += 1
    return n
