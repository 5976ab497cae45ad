"""Training recipes and the small model configs used for smoke runs and tests.

``RECIPES["paper"]`` is the RepViT-SAM / MobileSAM recipe: decoupled distillation of SAM ViT-H's
image embeddings into the student encoder with a plain MSE loss, on 1% of SA-1B (about 110k
images) for 8 epochs. The papers state the data, the epochs and the loss; neither states the
optimiser settings and neither released training code, so the optimiser values below are this
project's choice (documented in docs/distill.md): AdamW, lr 1e-3, weight decay 5e-4 (the values
of the most-cited public MobileSAM reproduction), a global batch of 8 images, linear warm-up over
the first 1% of steps and cosine decay to 1% of the peak.

``RECIPES["tiny"]`` runs in seconds on a CPU with the test-size variants of the variant table
(``tiny_vit_b`` teacher, ``tiny_repvit`` student: 256-pixel inputs, 16x16 embeddings).

``RECIPES["prompt"]`` is phase 2, prompt-in-the-loop distillation (EdgeSAM): the student's
masks learn the teacher's masks for the same box / point prompts, with two correction clicks.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from ..train.schedule import Recipe


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
        description="smoke runs: tiny_vit_b -> tiny_repvit on a handful of images",
    ),
    "prompt": Recipe(
        "prompt",
        epochs=1.0,
        batch_size=8,
        lr=1e-4,
        weight_decay=0.01,
        warmup_fraction=0.05,
        grad_clip=1.0,
        checkpoint_every=500,
        val_every=1000,
        log_every=10,
        val_images=20,
        description="phase 2, prompt-in-the-loop (EdgeSAM): BCE x5 + Dice x5 on the teacher's masks, 2 correction rounds",
    ),
}


def get_recipe(name: str, overrides: Optional[Dict[str, Any]] = None) -> Recipe:
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[name].replace(**(overrides or {}))
