"""Small layers shared by several encoders and by the decoder.

Module and parameter names follow the official checkpoints (``c``/``bn`` in ``Conv2d_BN``,
``lin1``/``lin2`` in ``MLPBlock``) so that published state_dicts load strictly.
"""

from __future__ import annotations

from typing import Tuple, Type

import torch
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) tensor, at every pixel."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MLPBlock(nn.Module):
    """Linear -> activation -> Linear, on the last axis."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: Type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


def fold_batchnorm(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fold an inference-mode BatchNorm that follows a conv into the conv's weight and bias.

    weight: (O, I/groups, kh, kw); bias: (O,) or None. Returns (w', b') with
    w' = w * g / sqrt(var + eps) and b' = beta + (b - mean) * g / sqrt(var + eps).
    """
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (O,)
    if bias is None:
        bias = torch.zeros_like(bn.running_mean)
    return weight * scale[:, None, None, None], bn.bias + (bias - bn.running_mean) * scale


def conv_like(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    """A Conv2d with ``conv``'s geometry and the given (fused) weight and bias."""
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=conv.groups,
        bias=True,
        device=weight.device,
        dtype=weight.dtype,
    )
    fused.weight.data.copy_(weight)
    fused.bias.data.copy_(bias)  # type: ignore[union-attr]
    return fused


class Conv2d_BN(nn.Sequential):
    """Conv2d (no bias) followed by BatchNorm2d; ``fuse()`` returns the single equivalent conv."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.add_module(
            "c",
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False),
        )
        self.add_module("bn", nn.BatchNorm2d(out_channels))
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    def fused_weight_bias(self) -> Tuple[torch.Tensor, torch.Tensor]:
        return fold_batchnorm(self.c.weight, self.c.bias, self.bn)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        return conv_like(self.c, *self.fused_weight_bias())


def sam_neck(in_chans: int, out_chans: int) -> nn.Sequential:
    """SAM's encoder neck: 1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d (keys neck.0 ... neck.3)."""
    return nn.Sequential(
        nn.Conv2d(in_chans, out_chans, 1, bias=False),
        LayerNorm2d(out_chans),
        nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False),
        LayerNorm2d(out_chans),
    )
