"""Pure functions on binary masks: COCO RLE, boxes, areas. Masks are (H, W) bool arrays."""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np


def mask_to_rle(mask: np.ndarray) -> Dict[str, Any]:
    """(H, W) bool -> COCO RLE ``{"size": [H, W], "counts": str}`` (pycocotools' compressed form)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rle_to_mask(rle: Dict[str, Any]) -> np.ndarray:
    """COCO RLE (compressed ``counts`` as str or bytes) -> (H, W) bool."""
    from pycocotools import mask as mask_utils

    counts = rle["counts"]
    obj = {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(obj).astype(bool)


def mask_to_box_xywh(mask: np.ndarray) -> List[int]:
    """Tight box of the True pixels as COCO [x, y, w, h] (pixels; [0, 0, 0, 0] if empty)."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        return [0, 0, 0, 0]
    return [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)]


def mask_record(mask: np.ndarray, score: float, **extra: Any) -> Dict[str, Any]:
    """One JSON-ready mask record: area, bbox (XYWH), predicted_iou, COCO RLE segmentation."""
    return {
        "area": int(mask.sum()),
        "bbox": mask_to_box_xywh(mask),
        "predicted_iou": float(score),
        "segmentation": mask_to_rle(mask),
        **extra,
    }
