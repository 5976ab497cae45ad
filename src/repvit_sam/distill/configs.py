"""Training recipes and the small model configs used for smoke runs and tests.

``RECIPES["paper"]`` is the RepViT-SAM / MobileSAM recipe: decoupled distillation of SAM ViT-H's
image embeddings into the student encoder with a plain MSE loss, on 1% of SA-1B (about 110k
images) for 8 epochs. The papers state the data, the epochs and the loss; neither states the
optimiser settings and neither released training code, so the optimiser values below are this
project's choice (documented in docs/distill.md): AdamW, lr 1e-3, weight decay 5e-4 (the values
of the most-cited public MobileSAM reproduction), a global batch of 8 images, linear warm-up over
the first 1% of steps and cosine decay to 1% of the peak.

``RECIPES["tiny"]`` runs in seconds on a CPU with the ``tiny_teacher`` / ``tiny_student``
models of :data:`MODELS` (64-pixel inputs, 4x4 embeddings).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ..config import PromptDecoderConfig, RepViTBlockCfg, RepViTConfig, SamConfig, ViTConfig


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the optimisation, independent of the launch (ranks, devices).

    ``batch_size`` is the global batch of one optimiser step (all ranks, all accumulation
    micro-steps together); it must be divisible by ``world_size * grad_accum``.
    """

    name: str
    epochs: float = 8.0
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 5e-4
    betas: tuple = (0.9, 0.999)
    warmup_fraction: float = 0.01  # of all optimiser steps
    min_lr_ratio: float = 0.01  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    checkpoint_every: int = 1000  # optimiser steps
    val_every: int = 2000  # optimiser steps; validation also runs at the end
    log_every: int = 20
    val_images: int = 200  # held out from the image set (the last ones in sorted order)
    val_prompts: int = 8  # boxes (largest SA-1B annotations) or points per validation image
    seed: int = 0
    description: str = ""

    def replace(self, **changes: Any) -> "Recipe":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d


RECIPES: Dict[str, Recipe] = {
    "paper": Recipe(
        "paper",
        description="RepViT-SAM / MobileSAM: 1% SA-1B (~110k images), 8 epochs, MSE on ViT-H embeddings",
    ),
    "tiny": Recipe(
        "tiny",
        epochs=4.0,
        batch_size=4,
        lr=3e-3,
        weight_decay=0.0,
        warmup_fraction=0.1,
        checkpoint_every=4,
        val_every=1000,
        log_every=1,
        val_images=2,
        val_prompts=2,
        description="smoke runs: tiny_teacher -> tiny_student on a handful of images",
    ),
}

# Test-size models: the same module types as vit_b / repvit, 64-pixel inputs, 4x4x32 embeddings.
TINY_DECODER = PromptDecoderConfig(
    embed_dim=32, image_embedding_size=4, mask_in_chans=8, transformer_heads=2,
    transformer_mlp_dim=64, iou_head_hidden_dim=32,
)
MODELS: Dict[str, SamConfig] = {
    "tiny_teacher": SamConfig(
        "tiny_teacher",
        ViTConfig(embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=2, out_chans=32, img_size=64),
        TINY_DECODER,
        description="test-size SAM ViT teacher (64 px)",
    ),
    "tiny_student": SamConfig(
        "tiny_student",
        RepViTConfig(
            blocks=(
                RepViTBlockCfg(16, True, 1),
                RepViTBlockCfg(32, False, 2),
                RepViTBlockCfg(32, True, 1),
                RepViTBlockCfg(48, False, 2),
                RepViTBlockCfg(48, False, 1),
            ),
            stem_channels=16,
            out_chans=32,
            img_size=64,
        ),
        TINY_DECODER,
        description="test-size RepViT student (64 px)",
    ),
}


def model_config(name: str) -> SamConfig:
    """The :class:`SamConfig` of a registered variant (``repvit``, ``vit_h``, aliases) or of a
    test-size model of :data:`MODELS`; a clear ``KeyError`` otherwise."""
    from ..config import VARIANTS, resolve_name

    if name in MODELS:
        return MODELS[name]
    try:
        return VARIANTS[resolve_name(name)]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; use a registered variant or one of: {', '.join(MODELS)}") from None


def is_registered(name: str) -> bool:
    return name not in MODELS


def get_recipe(name: str, overrides: Optional[Dict[str, Any]] = None) -> Recipe:
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[name].replace(**(overrides or {}))
