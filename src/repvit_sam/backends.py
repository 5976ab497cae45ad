"""Image-encoder backends: one name -> a callable that maps a preprocessed (B, 3, S, S) float
tensor to image embeddings (B, 256, S/16, S/16), float32.

    encode = prepare_encoder(model.image_encoder, "fused-cl")
    emb = encode(x)

The predictor and the automatic mask generator take ``backend=`` and call this. The benchmark
(``repvit-sam bench``) measures every backend listed in ``BACKENDS``.
"""

from __future__ import annotations

from typing import Callable, Tuple

import torch
from torch import nn

from .modeling.fuse import fuse_model

Encoder = Callable[[torch.Tensor], torch.Tensor]

BACKENDS: Tuple[str, ...] = ("eager", "fused", "fused-cl", "bf16")


class BackendError(ValueError):
    """Unknown or unavailable backend."""


def _check(name: str) -> None:
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")


def prepare_encoder(encoder: nn.Module, backend: str = "fused") -> Encoder:
    """``encoder`` in the given form. The module passed in is never modified (fusing copies)."""
    _check(backend)
    if backend == "eager":
        return encoder
    fused = fuse_model(encoder)
    if backend == "fused":
        return fused
    fused = fused.to(memory_format=torch.channels_last)
    if backend == "fused-cl":
        return lambda x: fused(x.contiguous(memory_format=torch.channels_last))

    def bf16(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            out = fused(x.contiguous(memory_format=torch.channels_last))
        return out.float()

    return bf16
