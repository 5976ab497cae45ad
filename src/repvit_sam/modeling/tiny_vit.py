"""TinyViT image encoder of MobileSAM (``vit_t``), with SAM's neck.

Stage 0 is MBConv blocks on (B, C, H, W); later stages are windowed self-attention blocks on
(B, L, C) tokens with learned relative-offset attention biases and a depthwise local conv.
The final patch merge keeps stride 1, so a 1024 input gives a 64x64 embedding.
"""

from __future__ import annotations

import itertools
from typing import Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..config import TinyViTConfig
from .common import Conv2d_BN, sam_neck


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 Conv2d_BN with GELU between: (B, 3, S, S) -> (B, C, S/4, S/4)."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            Conv2d_BN(in_chans, embed_dim // 2, 3, 2, 1),
            nn.GELU(),
            Conv2d_BN(embed_dim // 2, embed_dim, 3, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, add, GELU."""

    def __init__(self, channels: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(channels * expand_ratio)
        self.conv1 = Conv2d_BN(channels, hidden, 1)
        self.act1 = nn.GELU()
        self.conv2 = Conv2d_BN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = Conv2d_BN(hidden, channels, 1, bn_weight_init=0.0)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.conv1(x))
        y = self.act2(self.conv2(y))
        y = self.conv3(y)
        return self.act3(x + y)


class PatchMerging(nn.Module):
    """1x1 conv, depthwise 3x3 (stride 2, or 1 for the last merge), 1x1 conv; returns tokens.

    Input (B, C, H, W) or (B, H*W, C) at ``input_resolution``; output (B, H'*W', C').
    """

    def __init__(self, input_resolution: Tuple[int, int], dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.conv1 = Conv2d_BN(dim, out_dim, 1)
        self.act = nn.GELU()
        self.conv2 = Conv2d_BN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2d_BN(out_dim, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            h, w = self.input_resolution
            x = x.view(x.shape[0], h, w, -1).permute(0, 3, 1, 2)  # (B, C, H, W)
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        x = self.conv3(x)
        return x.flatten(2).transpose(1, 2)  # (B, H'W', C')


class ConvLayer(nn.Module):
    def __init__(self, dim: int, depth: int, expand_ratio: float, downsample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([MBConv(dim, expand_ratio) for _ in range(depth)])
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class TinyViTMlp(nn.Module):
    """LayerNorm -> fc1 -> GELU -> fc2, on (B, L, C)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class Attention(nn.Module):
    """Multi-head self-attention on one window, plus a learned bias per head and |dy|, |dx| offset.

    x: (B', N, C) with N = window**2. The qkv projection is laid out per head as [q | k | v].
    """

    def __init__(self, dim: int, num_heads: int, resolution: Tuple[int, int]) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = dim // num_heads
        self.scale = self.key_dim**-0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

        points = list(itertools.product(range(resolution[0]), range(resolution[1])))
        offsets: dict[Tuple[int, int], int] = {}
        idxs = []
        for p1 in points:
            for p2 in points:
                off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
                idxs.append(offsets.setdefault(off, len(offsets)))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        n = len(points)
        self.register_buffer("attention_bias_idxs", torch.tensor(idxs).view(n, n), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        x = self.norm(x)
        qkv = self.qkv(x).view(b, n, self.num_heads, 3 * self.key_dim)
        q, k, v = qkv.permute(0, 2, 1, 3).split(self.key_dim, dim=3)  # each (B', h, N, d)
        bias = self.attention_biases[:, self.attention_bias_idxs]  # (h, N, N)
        attn = (q @ k.transpose(-2, -1)) * self.scale + bias
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(b, n, -1)  # (B', N, C)
        return self.proj(x)


class TinyViTBlock(nn.Module):
    """Windowed attention (zero-padded to whole windows) + residual, depthwise local conv, MLP."""

    def __init__(
        self,
        dim: int,
        input_resolution: Tuple[int, int],
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        local_conv_size: int,
    ) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.window_size = window_size
        self.attn = Attention(dim, num_heads, (window_size, window_size))
        self.mlp = TinyViTMlp(dim, int(dim * mlp_ratio))
        pad = local_conv_size // 2
        self.local_conv = Conv2d_BN(dim, dim, local_conv_size, 1, pad, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.input_resolution
        b, n, c = x.shape
        ws = self.window_size
        shortcut = x
        if h == ws and w == ws:
            x = self.attn(x)
        else:
            x = x.view(b, h, w, c)
            pad_b = (ws - h % ws) % ws
            pad_r = (ws - w % ws) % ws
            if pad_b or pad_r:
                x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
            ph, pw = h + pad_b, w + pad_r
            nh, nw = ph // ws, pw // ws
            x = x.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
            x = self.attn(x)
            x = x.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
            if pad_b or pad_r:
                x = x[:, :h, :w].contiguous()
            x = x.view(b, n, c)
        x = shortcut + x
        x = x.transpose(1, 2).reshape(b, c, h, w)
        x = self.local_conv(x)
        x = x.view(b, c, n).transpose(1, 2)  # (B, L, C)
        return x + self.mlp(x)


class BasicLayer(nn.Module):
    def __init__(
        self,
        dim: int,
        input_resolution: Tuple[int, int],
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        local_conv_size: int,
        downsample: nn.Module | None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            [
                TinyViTBlock(dim, input_resolution, num_heads, window_size, mlp_ratio, local_conv_size)
                for _ in range(depth)
            ]
        )
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class TinyViT(nn.Module):
    """(B, 3, S, S) normalised image -> (B, out_chans, S/16, S/16) embedding."""

    def __init__(self, cfg: TinyViTConfig) -> None:
        super().__init__()
        self.img_size = cfg.img_size
        dims = cfg.embed_dims
        self.patch_embed = PatchEmbed(3, dims[0])
        res = cfg.img_size // 4
        self.layers = nn.ModuleList()
        num_layers = len(cfg.depths)
        for i in range(num_layers):
            # Stage i works at res / 2**i, except the last, which keeps the previous stage's size.
            r = res // (2 ** (i - 1 if i == num_layers - 1 else i))
            downsample = None
            if i < num_layers - 1:
                stride = 1 if i == num_layers - 2 else 2
                downsample = PatchMerging((r, r), dims[i], dims[i + 1], stride)
            if i == 0:
                self.layers.append(ConvLayer(dims[0], cfg.depths[0], cfg.mbconv_expand_ratio, downsample))
            else:
                self.layers.append(
                    BasicLayer(
                        dims[i],
                        (r, r),
                        cfg.depths[i],
                        cfg.num_heads[i],
                        cfg.window_sizes[i],
                        cfg.mlp_ratio,
                        cfg.local_conv_size,
                        downsample,
                    )
                )
        self.embed_hw = res // (2 ** (num_layers - 2))
        # Classification head of the ImageNet-pretrained TinyViT: unused, kept so that the
        # official checkpoint loads strictly.
        self.norm_head = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], cfg.num_classes)
        self.neck = sam_neck(dims[-1], cfg.out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        b, _, c = x.shape
        x = x.view(b, self.embed_hw, self.embed_hw, c).permute(0, 3, 1, 2)  # (B, C, 64, 64)
        return self.neck(x)
