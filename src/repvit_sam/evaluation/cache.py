"""Image-embedding cache: a re-run of a task (other prompts, other options) skips the encoder.

Layout: ``<root>/<model name>-<weights hash[:16]>/<image hash>.pt``, where the weights hash is
the SHA-256 of the model's state_dict (names, dtypes, shapes and bytes, so a fused and an
unfused copy of one checkpoint differ, as their embeddings may) and the image hash is the
SHA-256 of the RGB pixels, their shape and the encoder's input size. Each file holds the
embedding and the input / original sizes; it is written atomically and read with
``weights_only=True``. An unreadable entry is treated as a miss and rewritten.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..inference.predictor import SamPredictor


def weights_hash(model: torch.nn.Module) -> str:
    """SHA-256 (hex) of a model's state_dict: each tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class EmbeddingCache:
    """Embeddings of one model, keyed by image content."""

    def __init__(self, root: Path, model_name: str, model_hash: str) -> None:
        self.dir = Path(root) / f"{model_name}-{model_hash[:16]}"
        self.hits = 0
        self.misses = 0

    @staticmethod
    def image_key(rgb: np.ndarray, img_size: int) -> str:
        h = hashlib.sha256(f"{rgb.shape}|{rgb.dtype}|{img_size}|".encode())
        h.update(np.ascontiguousarray(rgb).tobytes())
        return h.hexdigest()

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.pt"

    def load(self, key: str) -> Optional[dict]:
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            entry = torch.load(p, map_location="cpu", weights_only=True)
            if not isinstance(entry, dict) or not isinstance(entry.get("features"), torch.Tensor):
                return None
            return entry
        except Exception:  # truncated / foreign file: recompute and overwrite
            return None

    def save(self, key: str, entry: dict) -> None:
        from ..utils import atomic_write

        with atomic_write(self.path(key), "wb") as f:
            torch.save(entry, f)


class CachedPredictor(SamPredictor):
    """A SamPredictor whose ``set_image`` looks the embedding up in an :class:`EmbeddingCache`
    first (``cache=None``: a plain predictor). The mask generator and the tasks use it as is."""

    def __init__(self, model, cache: Optional[EmbeddingCache]) -> None:
        super().__init__(model)
        self.cache = cache

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        if self.cache is None:
            return super().set_image(image, image_format)
        from ..image import to_rgb_uint8

        rgb = to_rgb_uint8(image)
        if image_format != self.model.image_format:
            rgb = np.ascontiguousarray(rgb[..., ::-1])
        key = self.cache.image_key(rgb, self.model.image_encoder.img_size)
        entry = self.cache.load(key)
        if entry is not None:
            self.set_embedding(entry["features"], entry["original_size"], entry["input_size"])
            self.cache.hits += 1
            return None
        self.cache.misses += 1
        super().set_image(rgb, self.model.image_format)
        assert self.features is not None
        self.cache.save(key, {"features": self.features.detach().cpu(), "original_size": list(self.original_size),
                              "input_size": list(self.input_size)})
        return None
