"""The automatic mask generator's geometry: box IoU and NMS, point grids, crop boxes, and the
column-wise record store that carries masks between its stages.

Boxes are XYXY with inclusive maxima (:mod:`repvit_sam.inference.masks`), so NMS decisions are
segment_anything's.
"""

from __future__ import annotations

import math
from itertools import product
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch

from ..masks import uncompressed_rle_to_mask


def box_iou(box: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """IoU of one XYXY box (4,) with each of ``boxes`` (N, 4); area = (x1 - x0) * (y1 - y0).

    0 / 0 (two degenerate boxes) gives NaN, which never exceeds a threshold.
    """
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    w = (torch.minimum(box[2], boxes[:, 2]) - torch.maximum(box[0], boxes[:, 0])).clamp(min=0)
    h = (torch.minimum(box[3], boxes[:, 3]) - torch.maximum(box[1], boxes[:, 1])).clamp(min=0)
    inter = w * h
    return inter / (area + areas - inter)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression (torchvision.ops.nms semantics, no torchvision).

    Visit boxes by score descending (ties: lower index first); keep a box unless an already
    kept box overlaps it with IoU > ``iou_threshold``. Returns kept indices (int64) in the
    visiting order.
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float64)
    scores = torch.as_tensor(scores, dtype=torch.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.shape != (boxes.shape[0],):
        raise ValueError(f"nms expects boxes (N, 4) and scores (N,); got {tuple(boxes.shape)} and {tuple(scores.shape)}")
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.int64)
    order = torch.sort(scores, descending=True, stable=True).indices
    sorted_boxes = boxes[order]
    suppressed = torch.zeros(n, dtype=torch.bool)
    keep: List[int] = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        if i + 1 < n:
            iou = box_iou(sorted_boxes[i], sorted_boxes[i + 1 :])
            suppressed[i + 1 :] |= iou > iou_threshold
    return order[torch.as_tensor(keep, dtype=torch.int64)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS independently per category ``idxs``: boxes of different categories never suppress
    each other (they are shifted apart by ``idxs * (max coordinate + 1)``)."""
    boxes = torch.as_tensor(boxes, dtype=torch.float64)
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64)
    idxs = torch.as_tensor(idxs).to(torch.float64)
    offsets = idxs * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def is_box_near_crop_edge(boxes: torch.Tensor, crop_box: Sequence[int], orig_box: Sequence[int], atol: float = 20.0) -> torch.Tensor:
    """(N, 4) XYXY boxes in crop coordinates -> (N,) bool: some side lies within ``atol`` of
    a crop edge that is not also within ``atol`` of the image edge."""
    crop_t = torch.as_tensor(crop_box, dtype=torch.float64)
    orig_t = torch.as_tensor(orig_box, dtype=torch.float64)
    b = uncrop_boxes_xyxy(boxes, crop_box).to(torch.float64)
    near_crop = (b - crop_t[None]).abs() <= atol
    near_image = (b - orig_t[None]).abs() <= atol
    return (near_crop & ~near_image).any(dim=1)


def uncrop_boxes_xyxy(boxes: torch.Tensor, crop_box: Sequence[int]) -> torch.Tensor:
    x0, y0 = int(crop_box[0]), int(crop_box[1])
    return boxes + torch.as_tensor([x0, y0, x0, y0], dtype=boxes.dtype)


def build_point_grid(n_per_side: int) -> np.ndarray:
    """(n^2, 2) XY points in [0, 1]: ((i + 0.5) / n, (j + 0.5) / n), x varying fastest."""
    if n_per_side < 1:
        raise ValueError(f"a point grid needs at least 1 point per side, got {n_per_side}")
    side = (np.arange(n_per_side, dtype=np.float64) + 0.5) / n_per_side
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> List[np.ndarray]:
    """One grid per crop layer 0..n_layers, layer k with int(n_per_side / scale_per_layer**k) per side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer**k))) for k in range(n_layers + 1)]


def generate_crop_boxes(im_size: Tuple[int, int], n_layers: int, overlap_ratio: float) -> Tuple[List[List[int]], List[int]]:
    """Crop boxes (XYXY) and their layer indices for an image of size (H, W).

    Layer 0 is the whole image. Layer k (1..n_layers) has 2^k crops per side overlapping by
    int(overlap_ratio * min(H, W) * 2 / 2^k) pixels, each of length
    ceil((overlap * (2^k - 1) + side) / 2^k); boxes are clipped to the image; order: x0 outer,
    y0 inner.
    """
    im_h, im_w = int(im_size[0]), int(im_size[1])
    short_side = min(im_h, im_w)
    boxes: List[List[int]] = [[0, 0, im_w, im_h]]
    layers = [0]

    def crop_len(orig_len: int, n_crops: int, overlap: int) -> int:
        return int(math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops))

    for i_layer in range(n_layers):
        n_crops = 2 ** (i_layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n_crops))
        crop_w = crop_len(im_w, n_crops, overlap)
        crop_h = crop_len(im_h, n_crops, overlap)
        x0s = [int((crop_w - overlap) * i) for i in range(n_crops)]
        y0s = [int((crop_h - overlap) * i) for i in range(n_crops)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layers.append(i_layer + 1)
    return boxes, layers



class MaskData:
    """Per-mask records held column-wise: rles (list), the rest tensors with a leading N axis."""

    def __init__(self, **fields: Any) -> None:
        self.fields: Dict[str, Any] = fields

    def __len__(self) -> int:
        return len(self.fields["rles"])

    def filter(self, keep: torch.Tensor) -> None:
        """Keep the rows ``keep`` (bool mask or index tensor, in that order)."""
        keep = torch.as_tensor(keep)
        if keep.dtype == torch.bool:
            keep = keep.nonzero().flatten()
        idx = keep.tolist()
        for k, v in self.fields.items():
            self.fields[k] = [v[i] for i in idx] if isinstance(v, list) else v[keep]

    @staticmethod
    def cat(parts: List["MaskData"]) -> "MaskData":
        out: Dict[str, Any] = {}
        for k in parts[0].fields:
            vals = [p.fields[k] for p in parts]
            out[k] = sum(vals, []) if isinstance(vals[0], list) else torch.cat(vals)
        return MaskData(**out)

    @staticmethod
    def empty() -> "MaskData":
        return MaskData(
            rles=[],
            boxes=torch.zeros(0, 4, dtype=torch.int64),
            iou_preds=torch.zeros(0),
            points=torch.zeros(0, 2, dtype=torch.float64),
            stability_score=torch.zeros(0),
            crop_boxes=torch.zeros(0, 4, dtype=torch.int64),
        )


def coverage(data: "MaskData", crop_box: Sequence[int]) -> np.ndarray:
    """Union of the masks in ``data`` (full-image RLEs) within ``crop_box``: (h, w) bool."""
    x0, y0, x1, y1 = (int(v) for v in crop_box)
    covered = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    for rle in data.fields["rles"]:
        covered |= uncompressed_rle_to_mask(rle)[y0:y1, x0:x1]
    return covered
