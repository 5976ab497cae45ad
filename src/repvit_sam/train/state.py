"""What a training checkpoint holds besides weights: RNG states as plain types, and the
atomic write / checked read of the file itself (``torch.load(weights_only=True)``)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

from ..utils import atomic_write

CKPT_FORMAT = 1
LAST = "last.pt"


class TrainingStateError(RuntimeError):
    """A run folder or checkpoint that cannot be used, with what to do about it."""


def rng_state(device: torch.device) -> Dict[str, Any]:
    """torch / CUDA / NumPy / Python RNG states as tensors and plain types."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: Dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_checkpoint(path: Path, payload: Dict[str, Any]) -> None:
    """Write ``payload`` through a temporary file and a rename: the previous checkpoint stays
    whole until the new one is complete."""
    with atomic_write(path) as f:
        torch.save(payload, f)


def load_checkpoint(path: Path, kind: str) -> Dict[str, Any]:
    """A training checkpoint of ``kind`` (e.g. ``repvit_sam.distill``), read with
    ``weights_only=True``; a one-line error for anything else."""
    from ..weights import read_checkpoint

    ck = read_checkpoint(path)
    if not isinstance(ck, dict) or ck.get("kind") != kind or ck.get("format") != CKPT_FORMAT:
        command = {"repvit_sam.distill": "distill train", "repvit_sam.finetune": "finetune"}.get(kind, kind)
        raise TrainingStateError(f"{path} is not a `repvit-sam {command}` checkpoint")
    return ck
