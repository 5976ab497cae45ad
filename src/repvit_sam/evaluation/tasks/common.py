"""Shared pieces of the tasks: the result record, batched decoding, click placement, mask
selection and progress bars."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch

SELECT_RULES = ("single", "best-score", "oracle")
CHUNK = 16  # prompts decoded per decoder call (bounds the full-size logits held at once)


@dataclass
class TaskResult:
    """What a task returns: its protocol (every choice that changes the numbers), the overall
    numbers, one record per image, and the rows of the Markdown table (label -> metrics)."""

    task: str
    protocol: Dict[str, Any]
    overall: Dict[str, Any]
    per_image: List[Dict[str, Any]]
    table: List[Tuple[str, Dict[str, float]]] = field(default_factory=list)
    unit: str = "images"  # what per_image holds one record of ("sequences" / "videos" for video tasks)


def progress(items: Iterable[Any], desc: str, total: Optional[int] = None, enabled: bool = True):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, total=total, file=sys.stderr, disable=not enabled, dynamic_ncols=True)


def decode(predictor, points: Optional[np.ndarray] = None, labels: Optional[np.ndarray] = None, boxes: Optional[np.ndarray] = None,
           mask_input: Optional[np.ndarray] = None, multimask: bool = False, return_logits: bool = False
           ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode B prompts on the predictor's current image, CHUNK at a time.

    points (B, N, 2) XY and labels (B, N) in image pixels; boxes (B, 4) XYXY; mask_input
    (B, 1, 256, 256) low-res logits. Returns masks (B, C, H, W) (bool, or float logits),
    scores (B, C), low-res logits (B, C, 256, 256)."""
    size = predictor.original_size
    n = len(points) if points is not None else len(boxes)
    dev = predictor.device
    outs = []
    for i in range(0, n, CHUNK):
        sl = slice(i, i + CHUNK)
        c = l = b = m = None
        if points is not None:
            pts = np.asarray(points[sl], dtype=np.float64)
            c = torch.as_tensor(predictor.transform.apply_coords(pts.reshape(-1, 2), size).reshape(pts.shape), dtype=torch.float, device=dev)
            l = torch.as_tensor(np.asarray(labels[sl]), dtype=torch.int, device=dev)
        if boxes is not None:
            b = torch.as_tensor(predictor.transform.apply_boxes(np.asarray(boxes[sl], dtype=np.float64), size), dtype=torch.float, device=dev)
        if mask_input is not None:
            m = torch.as_tensor(np.asarray(mask_input[sl]), dtype=torch.float, device=dev)
        masks, iou, low = predictor.predict_torch(c, l, b, m, multimask_output=multimask, return_logits=return_logits)
        outs.append((masks.cpu().numpy(), iou.float().cpu().numpy(), low.float().cpu().numpy()))
    return tuple(np.concatenate(p) for p in zip(*outs))  # type: ignore[return-value]


def select(masks: np.ndarray, scores: np.ndarray, rule: str, gts: Optional[List[np.ndarray]] = None) -> np.ndarray:
    """Index (B,) of the chosen candidate per prompt: 'single' (one output: 0), 'best-score'
    (highest predicted IoU), 'oracle' (highest IoU with the ground truth)."""
    if rule == "single" or masks.shape[1] == 1:
        return np.zeros(masks.shape[0], dtype=np.int64)
    if rule == "best-score":
        return scores.argmax(axis=1)
    if rule == "oracle":
        from ..metrics import mask_iou

        assert gts is not None
        return np.array([int(np.argmax([mask_iou(m, g) for m in ms])) for ms, g in zip(masks, gts)], dtype=np.int64)
    raise ValueError(f"unknown mask-selection rule {rule!r}; choose from {', '.join(SELECT_RULES)}")


def _distance_inside(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of each mask pixel to the nearest pixel outside the mask, counting
    the image border as outside."""
    from scipy import ndimage

    padded = np.pad(mask, 1, constant_values=False)
    return ndimage.distance_transform_edt(padded)[1:-1, 1:-1]


def farthest_point(mask: np.ndarray) -> Optional[Tuple[int, int]]:
    """(x, y) of the mask pixel farthest from the mask's boundary (argmax of the distance
    transform; ties: first in row-major order); None for an empty mask."""
    if not mask.any():
        return None
    d = _distance_inside(mask)
    y, x = np.unravel_index(int(np.argmax(d)), d.shape)
    return int(x), int(y)


def next_click(pred: np.ndarray, gt: np.ndarray) -> Optional[Tuple[int, int, int]]:
    """The next corrective click (x, y, label): the point farthest from the boundary of the
    larger error (by that distance) of false negatives (label 1) and false positives (label 0);
    None when the prediction is exact."""
    fn = gt & ~pred
    fp = pred & ~gt
    best = None
    for err, label in ((fn, 1), (fp, 0)):
        if err.any():
            d = _distance_inside(err)
            k = int(np.argmax(d))
            if best is None or d.flat[k] > best[0]:
                y, x = np.unravel_index(k, d.shape)
                best = (float(d.flat[k]), int(x), int(y), label)
    return None if best is None else best[1:]


# ---------------------------------------------------------------- argument helpers shared by tasks
def fraction(text: str) -> float:
    """argparse type: a number in (0, 1]."""
    import argparse

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return v


def add_coco_paths(p: Any) -> None:
    from pathlib import Path

    p.add_argument("--annotations", type=Path, metavar="FILE", help="instances JSON (default ROOT/annotations/instances_val2017.json or lvis_v1_val.json)")
    p.add_argument("--images", type=Path, metavar="DIR", help="images folder (default ROOT/val2017, else ROOT)")

