"""Pure functions on binary masks: RLE (COCO's compressed and segment_anything's uncompressed
form), boxes, areas, stability scores, small-region clean-up. Masks are (H, W) bool arrays, or
(N, H, W) bool tensors for the batched functions.

Box convention (the one every output of this package follows): segment_anything's, also SA-1B's.
A mask's box is XYXY over the covered pixel indices with *inclusive* maxima, and its XYWH form is
``[x0, y0, x1 - x0, y1 - y0]``: one less than the number of columns / rows covered (a single
pixel has w = h = 0); an empty mask has ``[0, 0, 0, 0]``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch


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
    """Tight box of the True pixels as XYWH in the package's convention (see the module
    docstring: ``w = x_max - x_min``); ``[0, 0, 0, 0]`` if empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        return [0, 0, 0, 0]
    return [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0]), int(ys[-1] - ys[0])]


def mask_record(mask: np.ndarray, score: float, **extra: Any) -> Dict[str, Any]:
    """One JSON-ready mask record: area, bbox (XYWH), predicted_iou, COCO RLE segmentation."""
    return {
        "area": int(mask.sum()),
        "bbox": mask_to_box_xywh(mask),
        "predicted_iou": float(score),
        "segmentation": mask_to_rle(mask),
        **extra,
    }


def batched_mask_to_box(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool -> (N, 4) int64 XYXY with inclusive maxima; [0, 0, 0, 0] for empty masks."""
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros(0, 4, dtype=torch.int64)
    rows = masks.any(dim=2)  # (N, H)
    cols = masks.any(dim=1)  # (N, W)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    y1 = torch.where(rows, ar_h, -1).max(dim=1).values
    y0 = torch.where(rows, ar_h, h).min(dim=1).values
    x1 = torch.where(cols, ar_w, -1).max(dim=1).values
    x0 = torch.where(cols, ar_w, w).min(dim=1).values
    out = torch.stack([x0, y0, x1, y1], dim=1).to(torch.int64)
    empty = ~rows.any(dim=1)
    out[empty] = 0
    return out


def box_xyxy_to_xywh(box: Sequence[float]) -> List[Any]:
    return [box[0], box[1], box[2] - box[0], box[3] - box[1]]


def calculate_stability_score(logits: torch.Tensor, mask_threshold: float, offset: float) -> torch.Tensor:
    """(..., H, W) logits -> (...) #(logits > t + offset) / #(logits > t - offset).

    The ratio of the areas of a tight and a loose binarisation: near 1 when the mask barely
    moves with the threshold. A mask empty at the loose threshold scores 0 (not NaN).
    """
    inter = torch.count_nonzero(logits > (mask_threshold + offset), dim=(-1, -2))
    union = torch.count_nonzero(logits > (mask_threshold - offset), dim=(-1, -2))
    score = inter.to(torch.float32) / union.clamp(min=1).to(torch.float32)
    return torch.where(union > 0, score, torch.zeros_like(score))


def masks_to_uncompressed_rle(masks: torch.Tensor) -> List[Dict[str, Any]]:
    """(N, H, W) bool -> uncompressed RLEs {"size": [H, W], "counts": [run lengths]}:
    column-major (Fortran) order, runs alternate 0s and 1s starting with 0s (a leading 0 run
    of length 0 if the first pixel is set)."""
    n, h, w = masks.shape
    if n == 0:
        return []
    flat = masks.permute(0, 2, 1).reshape(n, h * w)
    diff = flat[:, 1:] ^ flat[:, :-1]
    nz = diff.nonzero()
    per_mask = torch.bincount(nz[:, 0], minlength=n).tolist() if nz.numel() else [0] * n
    changes = torch.split(nz[:, 1], per_mask)
    first = flat[:, 0].tolist()
    out = []
    for i in range(n):
        bounds = torch.cat([torch.zeros(1, dtype=torch.int64), changes[i] + 1, torch.full((1,), h * w, dtype=torch.int64)])
        runs = (bounds[1:] - bounds[:-1]).tolist()
        counts = ([0] if first[i] else []) + runs
        out.append({"size": [h, w], "counts": counts})
    return out


def uncompressed_rle_to_mask(rle: Dict[str, Any]) -> np.ndarray:
    """Uncompressed RLE -> (H, W) bool."""
    h, w = (int(v) for v in rle["size"])
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if counts.sum() != h * w:
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, expected {h * w} for size {[h, w]}")
    values = (np.arange(counts.size) % 2).astype(bool)
    return np.repeat(values, counts).reshape(w, h).T.copy()


def area_from_rle(rle: Dict[str, Any]) -> int:
    return int(sum(rle["counts"][1::2]))


def coco_encode_rle(uncompressed_rle: Dict[str, Any]) -> Dict[str, Any]:
    """Uncompressed RLE -> COCO RLE {"size": [H, W], "counts": str} (needs pycocotools)."""
    from pycocotools import mask as mask_utils
    h, w = uncompressed_rle["size"]
    rle = mask_utils.frPyObjects(uncompressed_rle, h, w)
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("utf-8")}


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> Tuple[np.ndarray, bool]:
    """Remove islands ("islands") or fill holes ("holes") smaller than ``area_thresh`` pixels
    (8-connected components). Removing islands never empties a mask: if every island is
    small, the largest is kept. Returns (mask, changed)."""
    from scipy import ndimage

    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    correct_holes = mode == "holes"
    working = np.logical_xor(correct_holes, mask)
    regions, n_labels = ndimage.label(working, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(regions.ravel(), minlength=n_labels + 1)[1:]
    small = [i + 1 for i, s in enumerate(sizes) if s < area_thresh]
    if not small:
        return mask, False
    fill = [0] + small
    if not correct_holes:
        fill = [i for i in range(n_labels + 1) if i not in fill]
        if not fill:
            fill = [int(np.argmax(sizes)) + 1]
    return np.isin(regions, fill), True
