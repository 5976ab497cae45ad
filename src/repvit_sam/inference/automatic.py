"""Automatic mask generation: prompt the model with a grid of points, keep the good masks.

A drop-in for segment_anything's ``SamAutomaticMaskGenerator`` (same constructor parameters
and defaults, same ``generate`` records), written from the published algorithm:

1. crop boxes: the whole image (layer 0), then for layer k >= 1 a 2^k x 2^k grid of
   overlapping crops;
2. for each crop: embed it, decode a point grid (scaled to the crop) in batches with three
   masks per point, keep masks with predicted IoU > ``pred_iou_thresh`` and stability score
   >= ``stability_score_thresh``, binarise, drop masks touching a crop edge that is not an
   image edge, NMS within the crop (scores = predicted IoU);
3. across crops: NMS preferring smaller crops (scores = 1 / crop area);
4. optionally remove small islands and holes (``min_mask_region_area``) and NMS again.

This is the plain reference implementation. Binary masks are held as uncompressed RLE
between stages and decoded only for the output.

Conventions: boxes are XYXY internally with inclusive maxima (as segment_anything), so NMS
decisions are the reference's. The output ``bbox`` is segment_anything's: ``[x0, y0, x1 - x0,
y1 - y0]`` of that inclusive box (one less than the columns / rows covered; ``[0, 0, 0, 0]`` for
an empty mask), and ``crop_box`` is ``[x0, y0, x1 - x0, y1 - y0]``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
from itertools import product
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..modeling.sam import Sam
from .fast_decoder import FastDecoder
from .predictor import SamPredictor

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
IMPLS = ("fast", "reference")
PRECISIONS = ("fp32", "bf16")
SAMPLINGS = ("grid", "coarse-to-fine")

# Fast path: prompts per pass come from FastDecoder.pass_sizes; full-resolution masks held at once:
FULLRES_CHUNK = 8
FULLRES_PIXELS = 16 * 1024 * 1024  # at most this many full-size logits (64 MB) at once

# --------------------------------------------------------------------------- boxes and NMS


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


def box_xyxy_to_xywh(box: Sequence[float]) -> List[Any]:
    return [box[0], box[1], box[2] - box[0], box[3] - box[1]]


# --------------------------------------------------------------------------- grids and crops


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


# --------------------------------------------------------------------------- masks


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
    try:
        from pycocotools import mask as mask_utils
    except ImportError as exc:  # pragma: no cover - pycocotools is a dependency
        raise ImportError("output_mode='coco_rle' requires pycocotools (pip install pycocotools)") from exc
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


# --------------------------------------------------------------------------- generator


class _MaskData:
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
    def cat(parts: List["_MaskData"]) -> "_MaskData":
        out: Dict[str, Any] = {}
        for k in parts[0].fields:
            vals = [p.fields[k] for p in parts]
            out[k] = sum(vals, []) if isinstance(vals[0], list) else torch.cat(vals)
        return _MaskData(**out)

    @staticmethod
    def empty() -> "_MaskData":
        return _MaskData(
            rles=[],
            boxes=torch.zeros(0, 4, dtype=torch.int64),
            iou_preds=torch.zeros(0),
            points=torch.zeros(0, 2, dtype=torch.float64),
            stability_score=torch.zeros(0),
            crop_boxes=torch.zeros(0, 4, dtype=torch.int64),
        )


def _coverage(data: "_MaskData", crop_box: Sequence[int]) -> np.ndarray:
    """Union of the masks in ``data`` (full-image RLEs) within ``crop_box``: (h, w) bool."""
    x0, y0, x1, y1 = (int(v) for v in crop_box)
    covered = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    for rle in data.fields["rles"]:
        covered |= uncompressed_rle_to_mask(rle)[y0:y1, x0:x1]
    return covered


def _check_number(name: str, value: Any, lo: Optional[float] = None, hi: Optional[float] = None, integer: bool = False) -> None:
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.integer, np.floating))
    if isinstance(value, bool) or not ok_type:
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if lo is not None and value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise ValueError(f"{name} must be <= {hi}, got {value!r}")


class SamAutomaticMaskGenerator:
    """Masks for everything in an image, from a grid of point prompts (segment_anything's API).

    Arguments (defaults as segment_anything):
      model: the Sam model.
      points_per_side: points per side of the grid (points_per_side^2 prompts on layer 0);
        exactly one of points_per_side and point_grids must be given.
      points_per_batch: prompts decoded at once (memory vs speed).
      pred_iou_thresh: keep masks with predicted IoU > this (no filter if <= 0).
      stability_score_thresh: keep masks with stability score >= this (no filter if <= 0).
      stability_score_offset: logit offset of the stability score.
      box_nms_thresh: IoU threshold of the NMS within a crop.
      crop_n_layers: extra crop layers (layer k: 2^k x 2^k crops).
      crop_nms_thresh: IoU threshold of the NMS across crops.
      crop_overlap_ratio: crop overlap as a fraction of the short image side (layer 1).
      crop_n_points_downscale_factor: layer k uses points_per_side / factor^k points per side.
      point_grids: explicit grids, one (N, 2) array in [0, 1] per layer (0..crop_n_layers).
      min_mask_region_area: if > 0, remove islands / fill holes smaller than this (pixels).
      output_mode: "binary_mask" (bool (H, W) array), "uncompressed_rle" or "coco_rle".

    Beyond segment_anything (keyword-only):
      impl: "fast" (default: FastDecoder, IoU filter before upscaling, bounded chunks; same
        records up to float rounding) or "reference" (the plain algorithm).
      precision: "fp32" or "bf16" (decoder on a bfloat16 copy of its weights and, unless
        ``backend`` is given, the image encoder on the "bf16" backend).
      backend: image-encoder backend (repvit_sam.backends), e.g. "fused-cl", "openvino".
      sampling: "grid" or "coarse-to-fine" (a sparse grid first, then only the points of the
        full grid that no mask covers yet).
      coarse_points_per_side: the sparse grid's size (default points_per_side // 4).
    In the fast path ``points_per_batch`` only caps the prompts per decoder pass.
    """

    def __init__(
        self,
        model: Sam,
        points_per_side: Optional[int] = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Optional[List[np.ndarray]] = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        *,
        impl: str = "fast",
        precision: str = "fp32",
        backend: Optional[str] = None,
        sampling: str = "grid",
        coarse_points_per_side: Optional[int] = None,
    ) -> None:
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {', '.join(repr(m) for m in IMPLS)}; got {impl!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(repr(m) for m in PRECISIONS)}; got {precision!r}")
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(repr(m) for m in SAMPLINGS)}; got {sampling!r}")
        if impl == "reference" and (precision != "fp32" or sampling != "grid"):
            raise ValueError("impl='reference' is the plain algorithm: it takes precision='fp32' and sampling='grid' only")
        if sampling == "coarse-to-fine" and points_per_side is None:
            raise ValueError("sampling='coarse-to-fine' refines a regular grid: give points_per_side, not point_grids")
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("exactly one of points_per_side and point_grids must be given (set the other to None)")
        _check_number("points_per_batch", points_per_batch, lo=1, integer=True)
        _check_number("pred_iou_thresh", pred_iou_thresh)
        _check_number("stability_score_thresh", stability_score_thresh)
        _check_number("stability_score_offset", stability_score_offset, lo=0)
        _check_number("box_nms_thresh", box_nms_thresh, lo=0, hi=1)
        _check_number("crop_nms_thresh", crop_nms_thresh, lo=0, hi=1)
        _check_number("crop_n_layers", crop_n_layers, lo=0, integer=True)
        _check_number("crop_overlap_ratio", crop_overlap_ratio, lo=0)
        if crop_overlap_ratio >= 1:
            raise ValueError(f"crop_overlap_ratio must be < 1, got {crop_overlap_ratio!r}")
        _check_number("crop_n_points_downscale_factor", crop_n_points_downscale_factor, lo=1, integer=True)
        _check_number("min_mask_region_area", min_mask_region_area, lo=0)
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {', '.join(repr(m) for m in OUTPUT_MODES)}; got {output_mode!r}")
        if output_mode == "coco_rle":
            if importlib.util.find_spec("pycocotools") is None:  # pragma: no cover
                raise ImportError("output_mode='coco_rle' requires pycocotools (pip install pycocotools)")

        if points_per_side is not None:
            _check_number("points_per_side", points_per_side, lo=1, integer=True)
            smallest = int(points_per_side / (crop_n_points_downscale_factor**crop_n_layers))
            if smallest < 1:
                raise ValueError(
                    f"points_per_side={points_per_side} with crop_n_points_downscale_factor="
                    f"{crop_n_points_downscale_factor} leaves no points on crop layer {crop_n_layers}"
                )
            self.point_grids = build_all_layer_point_grids(int(points_per_side), int(crop_n_layers), int(crop_n_points_downscale_factor))
        else:
            grids = list(point_grids)  # type: ignore[arg-type]
            if len(grids) != crop_n_layers + 1:
                raise ValueError(f"point_grids must hold one grid per crop layer ({crop_n_layers + 1}), got {len(grids)}")
            checked = []
            for k, g in enumerate(grids):
                arr = np.asarray(g, dtype=np.float64)
                if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
                    raise ValueError(f"point_grids[{k}] must be a non-empty (N, 2) array of XY in [0, 1], got shape {arr.shape}")
                if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
                    raise ValueError(f"point_grids[{k}] values must lie in [0, 1] (fractions of the crop size)")
                checked.append(arr)
            self.point_grids = checked

        if sampling == "coarse-to-fine":
            coarse = coarse_points_per_side if coarse_points_per_side is not None else max(1, int(points_per_side) // 4)
            _check_number("coarse_points_per_side", coarse, lo=1, hi=points_per_side, integer=True)
            self.coarse_points_per_side = int(coarse)
        elif coarse_points_per_side is not None:
            raise ValueError("coarse_points_per_side applies to sampling='coarse-to-fine' only")
        else:
            self.coarse_points_per_side = None

        # The reference path decodes with the model's own MaskDecoder module. bf16 precision
        # also runs the image encoder in bf16 unless a backend is named.
        if precision == "bf16" and backend is None:
            backend = "bf16"
        self.predictor = SamPredictor(model, backend=backend, fast_decoder=impl == "fast")
        self.impl = impl
        self.precision = precision
        self.sampling = sampling
        self._fast: Optional[FastDecoder] = None
        # Held around each fast-path decoder pass (e.g. a server's model lock); no-op by default.
        self.decode_lock: Any = contextlib.nullcontext()
        self._progress: Optional[Callable[[int, int], None]] = None
        self._points_done = self._points_total = 0
        if impl == "fast":
            self._fast = FastDecoder(model, dtype=torch.bfloat16 if precision == "bf16" else torch.float32)
        self.points_per_batch = int(points_per_batch)
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_score_thresh = float(stability_score_thresh)
        self.stability_score_offset = float(stability_score_offset)
        self.box_nms_thresh = float(box_nms_thresh)
        self.crop_n_layers = int(crop_n_layers)
        self.crop_nms_thresh = float(crop_nms_thresh)
        self.crop_overlap_ratio = float(crop_overlap_ratio)
        self.crop_n_points_downscale_factor = int(crop_n_points_downscale_factor)
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode

    # ------------------------------------------------------------------ public
    @torch.no_grad()
    def generate(self, image: np.ndarray, progress: Optional[Callable[[int, int], None]] = None) -> List[Dict[str, Any]]:
        """All masks of ``image`` ((H, W, 3) uint8 RGB; other inputs are converted as by
        ``SamPredictor.set_image``). One record per mask:

        segmentation (per output_mode), area (int), bbox ([x, y, w, h] of the mask),
        predicted_iou (float), point_coords ([[x, y]] prompt in image pixels),
        stability_score (float), crop_box ([x, y, w, h] of the crop the mask came from).

        ``progress(points_done, points_total)``, if given, is called as the grid points of all
        crops are decoded (coarse-to-fine counts the points it skips as done).
        """
        from ..io import to_rgb_uint8

        rgb = to_rgb_uint8(image)
        self._progress = progress
        self._points_done = 0
        try:
            data = self._generate_masks(rgb)
        finally:
            self._progress = None
        if self.min_mask_region_area > 0:
            self._postprocess_small_regions(data, self.min_mask_region_area, max(self.box_nms_thresh, self.crop_nms_thresh))

        records = []
        f = data.fields
        for i, rle in enumerate(f["rles"]):
            mask = uncompressed_rle_to_mask(rle)
            if self.output_mode == "binary_mask":
                seg: Any = mask
            elif self.output_mode == "uncompressed_rle":
                seg = rle
            else:
                seg = coco_encode_rle(rle)
            records.append(
                {
                    "segmentation": seg,
                    "area": area_from_rle(rle),
                    "bbox": [int(v) for v in box_xyxy_to_xywh(f["boxes"][i].tolist())],
                    "predicted_iou": float(f["iou_preds"][i]),
                    "point_coords": [[float(v) for v in f["points"][i].tolist()]],
                    "stability_score": float(f["stability_score"][i]),
                    "crop_box": [int(v) for v in box_xyxy_to_xywh(f["crop_boxes"][i].tolist())],
                }
            )
        return records

    # ------------------------------------------------------------------ stages
    def _advance(self, n_points: int) -> None:
        if n_points <= 0:
            return
        self._points_done += n_points
        if self._progress is not None:
            self._progress(self._points_done, self._points_total)

    def _generate_masks(self, image: np.ndarray) -> _MaskData:
        orig_size = (int(image.shape[0]), int(image.shape[1]))
        crop_boxes, layer_idxs = generate_crop_boxes(orig_size, self.crop_n_layers, self.crop_overlap_ratio)
        self._points_total = sum(len(self.point_grids[layer]) for layer in layer_idxs)
        data = _MaskData.cat([self._process_crop(image, box, layer, orig_size) for box, layer in zip(crop_boxes, layer_idxs)])
        if len(crop_boxes) > 1 and len(data) > 0:
            cb = data.fields["crop_boxes"].to(torch.float64)
            scores = 1.0 / ((cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1]))
            keep = batched_nms(data.fields["boxes"], scores, torch.zeros(len(data)), self.crop_nms_thresh)
            data.filter(keep)
        return data

    def _process_crop(self, image: np.ndarray, crop_box: List[int], layer: int, orig_size: Tuple[int, int]) -> _MaskData:
        x0, y0, x1, y1 = crop_box
        crop = np.ascontiguousarray(image[y0:y1, x0:x1, :])
        crop_size = (int(crop.shape[0]), int(crop.shape[1]))
        self.predictor.set_image(crop)
        scale = np.array(crop_size, dtype=np.float64)[None, ::-1]
        points = self.point_grids[layer] * scale
        parts = [_MaskData.empty()]
        if self.impl == "reference":
            for i in range(0, len(points), self.points_per_batch):
                parts.append(self._process_batch(points[i : i + self.points_per_batch], crop_size, crop_box, orig_size))
                self._advance(len(points[i : i + self.points_per_batch]))
        else:
            assert self._fast is not None and self.predictor.features is not None
            self._fast.set_image(self.predictor.features)
            if self.sampling == "coarse-to-fine":
                coarse = build_point_grid(self.coarse_points_per_side) * scale  # type: ignore[arg-type]
                parts += self._decode_fast(coarse, crop_size, crop_box, orig_size, report=False)
                covered = _coverage(_MaskData.cat(parts), crop_box)
                px = np.clip(np.floor(points).astype(np.int64), 0, [crop_size[1] - 1, crop_size[0] - 1])
                n_grid = len(points)
                points = points[~covered[px[:, 1], px[:, 0]]]
                self._advance(n_grid - len(points))
            parts += self._decode_fast(points, crop_size, crop_box, orig_size, report=True)
        self.predictor.reset_image()
        data = _MaskData.cat(parts)
        if len(data) == 0:
            return data
        keep = batched_nms(data.fields["boxes"], data.fields["iou_preds"], torch.zeros(len(data)), self.box_nms_thresh)
        data.filter(keep)
        data.fields["boxes"] = uncrop_boxes_xyxy(data.fields["boxes"], crop_box)
        data.fields["points"] = data.fields["points"] + torch.as_tensor([x0, y0], dtype=torch.float64)
        data.fields["crop_boxes"] = torch.as_tensor([crop_box] * len(data), dtype=torch.int64).reshape(-1, 4)
        return data

    def _process_batch(self, points: np.ndarray, crop_size: Tuple[int, int], crop_box: List[int], orig_size: Tuple[int, int]) -> _MaskData:
        """Reference path: one ``predict_torch`` call for the batch (full-size logits of all
        three masks of every point), then the filters."""
        pred = self.predictor
        coords = torch.as_tensor(pred.transform.apply_coords(points, crop_size), dtype=torch.float, device=pred.device)
        labels = torch.ones(coords.shape[0], dtype=torch.int, device=pred.device)
        logits, iou, _ = pred.predict_torch(coords[:, None, :], labels[:, None], multimask_output=True, return_logits=True)
        n_out = logits.shape[1]
        logits = logits.flatten(0, 1)  # (B * 3, h, w): the 3 masks of each point in turn
        iou = iou.flatten(0, 1).float().cpu()
        pts = torch.as_tensor(np.repeat(points, n_out, axis=0), dtype=torch.float64)
        keep = torch.ones(len(iou), dtype=torch.bool)
        if self.pred_iou_thresh > 0.0:
            keep &= iou > self.pred_iou_thresh
        return self._filter_and_encode(logits, iou, pts, keep, crop_box, orig_size)

    def _decode_fast(
        self, points: np.ndarray, crop_size: Tuple[int, int], crop_box: List[int], orig_size: Tuple[int, int], report: bool = True
    ) -> List[_MaskData]:
        """Fast path: the transformer for every point (FastDecoder.tokens), then upscaling and
        full-size logits only for masks that pass the predicted-IoU filter, in bounded chunks.
        Records come out in the reference's order (by point, then mask)."""
        parts: List[_MaskData] = []
        if len(points) == 0:
            return parts
        pred, dec = self.predictor, self._fast
        assert dec is not None and pred.input_size is not None
        coords = torch.as_tensor(pred.transform.apply_coords(points, crop_size), dtype=torch.float, device=pred.device)
        labels = torch.ones(coords.shape[0], 1, dtype=torch.int, device=pred.device)
        sparse, _ = pred.model.prompt_encoder(points=(coords[:, None, :], labels), boxes=None, masks=None)
        multi = torch.arange(1, dec.decoder.num_mask_tokens)
        multi_index = multi.tolist()
        n_multi = len(multi)
        h, w = crop_size
        full_chunk = max(1, min(FULLRES_CHUNK, FULLRES_PIXELS // max(1, h * w)))
        token_chunk, mask_chunk = (min(n, self.points_per_batch) for n in dec.pass_sizes)
        for i in range(0, len(points), token_chunk):
            with self.decode_lock:
                state = dec.tokens(sparse[i : i + token_chunk], mask_index=multi_index)
            iou = state.iou_pred[:, multi].cpu()  # (b, 3)
            cand = iou > self.pred_iou_thresh if self.pred_iou_thresh > 0.0 else torch.ones_like(iou, dtype=torch.bool)
            rows = cand.any(dim=1).nonzero().flatten()
            low_parts, iou_parts, pt_parts = [], [], []
            for j in range(0, len(rows), mask_chunk):
                r = rows[j : j + mask_chunk]
                pick = cand[r]  # (k, 3)
                with self.decode_lock:
                    low = dec.masks(state.select(r.to(state.device)), multi)
                low_parts.append(low[pick.to(state.device)])
                iou_parts.append(iou[r][pick])
                pt_parts.append((i + r)[:, None].expand(-1, n_multi)[pick])
            if low_parts:
                low, ious, pidx = torch.cat(low_parts), torch.cat(iou_parts), torch.cat(pt_parts)
                for k in range(0, len(low), full_chunk):
                    sl = slice(k, k + full_chunk)
                    logits = pred.model.postprocess_masks(low[None, sl], pred.input_size, crop_size)[0]
                    pts = torch.as_tensor(points[pidx[sl].numpy()], dtype=torch.float64)
                    keep = torch.ones(len(logits), dtype=torch.bool)
                    parts.append(self._filter_and_encode(logits, ious[sl], pts, keep, crop_box, orig_size))
            if report:
                self._advance(min(token_chunk, len(points) - i))
        return parts

    def _filter_and_encode(
        self, logits: torch.Tensor, iou: torch.Tensor, pts: torch.Tensor, keep: torch.Tensor,
        crop_box: List[int], orig_size: Tuple[int, int],
    ) -> _MaskData:
        """Full-size logits (N, h, w) of a crop -> records of the masks that pass ``keep``, the
        stability filter and the crop-edge filter, as full-image RLEs."""
        orig_h, orig_w = orig_size
        threshold = self.predictor.model.mask_threshold
        stability = calculate_stability_score(logits, threshold, self.stability_score_offset).cpu()
        if self.stability_score_thresh > 0.0:
            keep = keep & (stability >= self.stability_score_thresh)
        idx = keep.nonzero().flatten()
        masks = logits[idx.to(logits.device)] > threshold
        del logits
        boxes = batched_mask_to_box(masks).cpu()
        edge_ok = ~is_box_near_crop_edge(boxes, crop_box, [0, 0, orig_w, orig_h])
        idx, masks, boxes = idx[edge_ok], masks[edge_ok.to(masks.device)], boxes[edge_ok]

        # Uncrop: pad the crop-sized masks into the full image, then keep them as RLE.
        x0, y0, x1, y1 = crop_box
        if (x0, y0, x1, y1) != (0, 0, orig_w, orig_h):
            full = torch.zeros(masks.shape[0], orig_h, orig_w, dtype=torch.bool, device=masks.device)
            full[:, y0:y1, x0:x1] = masks
            masks = full
        rles = masks_to_uncompressed_rle(masks.cpu())
        return _MaskData(
            rles=rles,
            boxes=boxes,
            iou_preds=iou[idx],
            points=pts[idx],
            stability_score=stability[idx],
            crop_boxes=torch.zeros(len(rles), 4, dtype=torch.int64),
        )

    @staticmethod
    def _postprocess_small_regions(data: _MaskData, min_area: float, nms_thresh: float) -> None:
        """Remove small islands and holes from every mask, then NMS preferring unchanged masks
        (score 1 unchanged, 0 changed); changed masks that survive get their new RLE and box."""
        if len(data) == 0:
            return
        new_masks, scores = [], []
        for rle in data.fields["rles"]:
            mask = uncompressed_rle_to_mask(rle)
            mask, changed_holes = remove_small_regions(mask, min_area, mode="holes")
            mask, changed_islands = remove_small_regions(mask, min_area, mode="islands")
            new_masks.append(torch.as_tensor(mask))
            scores.append(0.0 if (changed_holes or changed_islands) else 1.0)
        masks = torch.stack(new_masks)
        boxes = batched_mask_to_box(masks)
        keep = batched_nms(boxes, torch.as_tensor(scores), torch.zeros(len(boxes)), nms_thresh)
        for i in keep.tolist():
            if scores[i] == 0.0:
                data.fields["rles"][i] = masks_to_uncompressed_rle(masks[i : i + 1])[0]
                data.fields["boxes"][i] = boxes[i]
        data.filter(keep)
