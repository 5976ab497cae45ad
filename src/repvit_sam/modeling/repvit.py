"""RepViT-SAM image encoder: a RepViT-M2.3 trunk at total stride 16, then SAM's neck.

Training form (branchy, with BatchNorm) loads the official checkpoint; ``fuse()`` on each
branchy module gives the inference form used by :func:`repvit_sam.fuse_model`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import RepViTConfig
from .common import Conv2d_BN, conv_like, fold_batchnorm, sam_neck


def _round_channels(value: float, divisor: int = 8) -> int:
    """Round half-up to a multiple of ``divisor`` (80 * 0.25 -> 24, 640 * 0.25 -> 160)."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


class SqueezeExcite(nn.Module):
    """x * sigmoid(fc2(relu(fc1(mean_hw(x))))); reduced width = C/4 rounded half-up to 8."""

    def __init__(self, channels: int, rd_ratio: float = 0.25) -> None:
        super().__init__()
        rd = _round_channels(channels * rd_ratio)
        self.fc1 = nn.Conv2d(channels, rd, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        s = self.fc2(self.act(self.fc1(s)))
        return x * s.sigmoid()


class RepVGGDW(nn.Module):
    """bn(dw3x3_bn(x) + dw1x1(x) + x); fuses to one depthwise 3x3 conv with bias."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = Conv2d_BN(channels, channels, 3, 1, 1, groups=channels)
        self.conv1 = nn.Conv2d(channels, channels, 1, 1, 0, groups=channels, bias=True)
        self.bn = nn.BatchNorm2d(channels)
        self.dim = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn((self.conv(x) + self.conv1(x)) + x)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        w3, b3 = self.conv.fused_weight_bias()  # (C, 1, 3, 3), (C,)
        w1 = nn.functional.pad(self.conv1.weight, [1, 1, 1, 1])  # 1x1 kernel at the centre of 3x3
        identity = torch.zeros_like(w3)
        identity[:, :, 1, 1] = 1.0
        weight = w3 + w1 + identity
        bias = b3 + self.conv1.bias  # type: ignore[operator]
        return conv_like(self.conv.c, *fold_batchnorm(weight, bias, self.bn))


class Residual(nn.Module):
    """x + m(x), with stochastic depth on the branch while training."""

    def __init__(self, m: nn.Module, drop: float = 0.0) -> None:
        super().__init__()
        self.m = m
        self.drop = drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.drop > 0:
            keep = torch.rand(x.size(0), 1, 1, 1, device=x.device) >= self.drop
            return x + self.m(x) * keep.to(x.dtype) / (1 - self.drop)
        return x + self.m(x)


def _mlp(channels: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        Conv2d_BN(channels, hidden, 1),
        nn.GELU(),
        Conv2d_BN(hidden, channels, 1, bn_weight_init=0.0),
    )


class RepViTBlock(nn.Module):
    """token_mixer (spatial, depthwise) then channel_mixer (residual 1x1 MLP, 2x expansion).

    A stride-1 block keeps the channel count; a downsample block (``in != out``) uses a strided
    depthwise conv and a 1x1 projection, without a residual around its token mixer.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, use_se: bool) -> None:
        super().__init__()
        if in_channels == out_channels and stride == 1:
            self.token_mixer = nn.Sequential(
                RepVGGDW(in_channels),
                SqueezeExcite(in_channels) if use_se else nn.Identity(),
            )
        else:
            self.token_mixer = nn.Sequential(
                Conv2d_BN(in_channels, in_channels, kernel, stride, (kernel - 1) // 2, groups=in_channels),
                SqueezeExcite(in_channels) if use_se else nn.Identity(),
                Conv2d_BN(in_channels, out_channels, 1),
            )
        self.channel_mixer = Residual(_mlp(out_channels, 2 * out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_mixer(self.token_mixer(x))


class RepViT(nn.Module):
    """(B, 3, S, S) normalised image -> (B, out_chans, S/16, S/16) embedding."""

    def __init__(self, cfg: RepViTConfig) -> None:
        super().__init__()
        self.img_size = cfg.img_size
        c = cfg.stem_channels
        stem = nn.Sequential(
            Conv2d_BN(3, c // 2, 3, 2, 1),
            nn.GELU(),
            Conv2d_BN(c // 2, c, 3, 2, 1),
        )
        layers: list[nn.Module] = [stem]
        for block in cfg.blocks:
            layers.append(RepViTBlock(c, block.channels, 3, block.stride, block.use_se))
            c = block.channels
        self.features = nn.ModuleList(layers)
        self.neck = sam_neck(c, cfg.out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for f in self.features:
            x = f(x)
        return self.neck(x)
