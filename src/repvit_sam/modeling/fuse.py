"""Re-parameterisation for inference: replace every module that has ``fuse()`` by its result.

Modules with a ``fuse() -> nn.Module`` method (``Conv2d_BN``, ``RepVGGDW``) are swapped, bottom
up, for the single conv they equal in eval mode. The model must be in eval mode: a fused model
has no BatchNorm statistics left to train.
"""

from __future__ import annotations

import copy

from torch import nn


def _fuse_children(module: nn.Module) -> None:
    for name, child in module.named_children():
        fuse = getattr(child, "fuse", None)
        if callable(fuse):
            setattr(module, name, fuse())
        else:
            _fuse_children(child)


def fuse_model(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return ``model`` in its inference form (no BatchNorm left in fusable blocks), in eval mode.

    The result computes the same function as ``model.eval()`` up to float rounding. By default
    the input is left untouched and a fused copy is returned; ``inplace=True`` fuses ``model``
    itself (no extra memory).
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    _fuse_children(model)
    return model
