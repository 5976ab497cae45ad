"""Mask losses, one value per mask (average over its pixels).

All take ``logits`` and ``targets`` of shape (N, H, W) (targets in {0, 1}, any float or bool
dtype) and return (N,) float32.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al. 2017), SAM's mask loss term: per mask, the mean over
    pixels of ``-alpha_t (1 - p_t)^gamma log p_t``."""
    logits, t = logits.float(), targets.float()
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss.flatten(1).mean(1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice between sigmoid(logits) and the target, per mask (``smooth`` added to both
    the numerator and the denominator, so an empty target with an empty prediction costs 0)."""
    p = torch.sigmoid(logits.float()).flatten(1)
    t = targets.float().flatten(1)
    return 1 - (2 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)


def bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits, mean over each mask's pixels."""
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none").flatten(1).mean(1)


def mask_ious(pred: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of boolean masks (N, H, W) with targets (N, H, W); 1 where both are empty."""
    pred, t = pred.flatten(1), targets.flatten(1).bool()
    inter = (pred & t).sum(1).float()
    union = (pred | t).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
