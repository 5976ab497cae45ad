"""Image sets for distillation, and the preprocessing the models see at inference.

An image set is a folder, searched recursively for JPEG/PNG/TIFF/WebP/BMP files. An image's key
is its path relative to the folder without the suffix (``sa_1.jpg`` -> ``sa_1``); keys are sorted,
so every process and every run agrees on the order. In the SA-1B layout each ``sa_N.jpg`` has an
``sa_N.json`` annotation file beside it, whose boxes become validation prompts.

Preprocessing is the inference path itself: :class:`ResizeLongestSide` (PIL bilinear) on the
uint8 image, then :meth:`Sam.preprocess` (normalise, zero-pad to a square), exactly as
:meth:`SamPredictor.set_image` does.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..config import SamConfig
from ..inference.transforms import ResizeLongestSide
from ..io import ImageError, load_image
from ..modeling.sam import Sam

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp")


class DataError(RuntimeError):
    """An image set or annotation that cannot be used, with what to do about it."""


def list_images(root: Path) -> Dict[str, Path]:
    """``{key: path}`` of every image under ``root``, keys sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    found: Dict[str, Path] = {}
    for p in root.rglob("*"):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            key = p.relative_to(root).with_suffix("").as_posix()
            if key in found:
                raise DataError(f"two images share the key {key!r}: {found[key].name} and {p.name}; keep one")
            found[key] = p
    if not found:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {root}")
    return {k: found[k] for k in sorted(found)}


def resolve_images(root: Path, keys: Sequence[str]) -> List[Path]:
    """Paths of ``keys`` under ``root``; a clear error naming the first missing ones."""
    available = list_images(root)
    missing = [k for k in keys if k not in available]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise DataError(
            f"{len(missing)} image(s) of the embeddings index are missing under {root} ({shown}); "
            f"pass the --images folder the embeddings were computed from"
        )
    return [available[k] for k in keys]


class Preprocessor:
    """uint8 (H, W, 3) image -> (3, S, S) float model input, as at inference."""

    def __init__(self, cfg: SamConfig) -> None:
        self.img_size = cfg.img_size
        self.transform = ResizeLongestSide(cfg.img_size)
        # Sam.preprocess only reads these three attributes: call it on a stand-in, not a copy.
        self._sam_like = SimpleNamespace(
            pixel_mean=torch.tensor(cfg.pixel_mean).view(-1, 1, 1),
            pixel_std=torch.tensor(cfg.pixel_std).view(-1, 1, 1),
            img_size=cfg.img_size,
        )

    def __call__(self, image: np.ndarray) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """(model input (3, S, S) float32, resized (h, w))."""
        resized = self.transform.apply_image(np.ascontiguousarray(image))
        x = torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None]
        return Sam.preprocess(self._sam_like, x)[0], (int(resized.shape[0]), int(resized.shape[1]))


def read_image(path: Path) -> np.ndarray:
    try:
        return load_image(path)
    except FileNotFoundError:
        raise DataError(f"image not found: {path}; was it moved after the embeddings were computed?") from None
    except ImageError as e:
        raise DataError(str(e)) from None


class ImageDataset(torch.utils.data.Dataset):
    """``(index, model input)`` for each path; decoding happens in the DataLoader workers."""

    def __init__(self, paths: Sequence[Path], cfg: SamConfig) -> None:
        self.paths = list(paths)
        self.pre = Preprocessor(cfg)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Tuple[int, torch.Tensor]:
        x, _ = self.pre(read_image(self.paths[i]))
        return i, x


# ------------------------------------------------------------------ validation prompts
def sa1b_boxes(json_path: Path, limit: int) -> Optional[np.ndarray]:
    """Up to ``limit`` XYXY boxes (largest first) from an SA-1B annotation file, or None when
    the file does not exist. SA-1B's ``bbox`` is XYWH in original-image pixels."""
    if not json_path.exists():
        return None
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
        anns = data["annotations"]
        boxes = [(float(a.get("area", a["bbox"][2] * a["bbox"][3])), a["bbox"]) for a in anns]
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise DataError(f"{json_path} is not an SA-1B annotation file (need 'annotations' with 'bbox'): {e}") from None
    boxes.sort(key=lambda t: -t[0])
    out = [[x, y, x + w, y + h] for _, (x, y, w, h) in boxes[:limit] if w > 0 and h > 0]
    return np.array(out, dtype=np.float64).reshape(-1, 4) if out else None


def grid_points(original_size: Tuple[int, int], count: int) -> np.ndarray:
    """``count`` foreground point prompts on a centred grid, XY in original pixels, (N, 1, 2)."""
    h, w = original_size
    side = max(1, int(np.ceil(np.sqrt(count))))
    ticks = (np.arange(side) + 0.5) / side
    pts = np.array([(x * w, y * h) for y in ticks for x in ticks], dtype=np.float64)[:count]
    return pts[:, None, :]
