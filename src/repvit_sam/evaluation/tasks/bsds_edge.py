"""bsds-edge: zero-shot edge detection on BSDS500 by SAM's protocol.

Per image: a 16 x 16 grid of foreground points, 3 masks each (768), no predicted-IoU or
stability filtering; empty masks dropped; NMS over the masks' boxes (IoU 0.7, scores =
predicted IoU, as SamAutomaticMaskGenerator); for each kept mask the Sobel gradient magnitude
of its unthresholded probability map sigmoid(logits), set to zero except within one pixel of
the outer boundary of the binary mask (holes filled); the maximum over masks, normalised to
[0, 1]; edge NMS (pyEdgeEval's port of the structured-edge toolbox's NMS). The benchmark then
thins each thresholded map (bwmorph thin) and matches pixels within 0.0075 x the image
diagonal against every annotator: ODS, OIS, AP, R50 over 99 thresholds.
"""

from __future__ import annotations

import argparse

from typing import Any, Dict, List, Optional

import numpy as np
import torch

from ..datasets import Sample, load_bsds_boundaries
from ..metrics import edge_counts, edge_scores, image_ois, pyedgeeval
from .common import CHUNK, TaskResult, progress


NAME = "bsds-edge"
HELP = "zero-shot edge detection on BSDS500: ODS, OIS, AP, R50"
GRID = 16  # default points per side of the dense tasks' grid (0: no grid)
MAP = 'edge map'  # what the per-image PNGs under OUT/maps show (None: no maps)

def _outer_band(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    filled = ndimage.binary_fill_holes(mask)
    edge = filled ^ ndimage.binary_erosion(filled, border_value=0)
    return ndimage.binary_dilation(edge, structure=np.ones((3, 3), dtype=bool))


def _mask_edges(prob: np.ndarray, mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    g = np.hypot(ndimage.sobel(prob, axis=0), ndimage.sobel(prob, axis=1))
    return np.where(_outer_band(mask), g, 0.0)


def edge_map(predictor, image: np.ndarray, points_per_side: int = 16, nms_thresh: float = 0.7, edge_nms: bool = True) -> np.ndarray:
    """The (H, W) edge map in [0, 1] of one image (the steps in the module docstring)."""
    from ...inference.amg.utils import build_point_grid, nms
    from ...inference.masks import batched_mask_to_box

    predictor.set_image(image)
    h, w = predictor.original_size
    grid = build_point_grid(points_per_side) * np.array([w, h], dtype=np.float64)
    dev = predictor.device

    def run_points(pts: np.ndarray):
        c = torch.as_tensor(predictor.transform.apply_coords(pts, (h, w)), dtype=torch.float, device=dev)[:, None, :]
        lab = torch.ones(len(pts), 1, dtype=torch.int, device=dev)
        logits, iou, _ = predictor.predict_torch(c, lab, multimask_output=True, return_logits=True)
        return logits.float().cpu(), iou.float().cpu()

    # pass 1: boxes and scores of all masks (point index, candidate) -> NMS
    boxes, scores, ids = [], [], []
    for i in range(0, len(grid), CHUNK):
        logits, iou = run_points(grid[i : i + CHUNK])
        m = logits > predictor.model.mask_threshold
        nonempty = m.flatten(2).any(-1)
        b = batched_mask_to_box(m.flatten(0, 1))
        for j in range(m.shape[0]):
            for k in range(m.shape[1]):
                if nonempty[j, k]:
                    boxes.append(b[j * m.shape[1] + k])
                    scores.append(float(iou[j, k]))
                    ids.append((i + j, k))
    out = np.zeros((h, w), dtype=np.float64)
    if not ids:
        return out
    keep = nms(torch.stack(boxes).to(torch.float64), torch.tensor(scores, dtype=torch.float64), nms_thresh).tolist()
    wanted: Dict[int, List[int]] = {}
    for q in keep:
        wanted.setdefault(ids[q][0], []).append(ids[q][1])
    # pass 2: edges of the kept masks
    pts_idx = sorted(wanted)
    for i in range(0, len(pts_idx), CHUNK):
        chunk = pts_idx[i : i + CHUNK]
        logits, _ = run_points(grid[chunk])
        for j, p in enumerate(chunk):
            for k in wanted[p]:
                lg = logits[j, k].numpy().astype(np.float64)
                prob = 1.0 / (1.0 + np.exp(-np.clip(lg, -50, 50)))
                np.maximum(out, _mask_edges(prob, lg > predictor.model.mask_threshold), out=out)
    if out.max() > 0:
        out /= out.max()
    if edge_nms and out.max() > 0:
        fast_nms = pyedgeeval("pyEdgeEval.preprocess").fast_nms
        out = np.clip(fast_nms(out.astype(np.float64), r=1, s=5, m=1.01), 0.0, 1.0)
    return out


def run(predictor, samples: List[Sample], points_per_side: int = 16, nms_thresh: float = 0.7, thresholds: int = 99,
        save_dir: Optional[Any] = None, show_progress: bool = True) -> TaskResult:
    from ...io import load_image, save_png_atomic

    counts, per_image = [], []
    for s in progress(samples, "bsds-edge", enabled=show_progress):
        image = load_image(s.image, max_pixels=None)
        gts = load_bsds_boundaries(s.label)
        if gts[0].shape != image.shape[:2]:
            from ..datasets import DatasetError

            raise DatasetError(f"{s.label} boundaries are {gts[0].shape[1]}x{gts[0].shape[0]} but {s.image.name} is {image.shape[1]}x{image.shape[0]}")
        e = edge_map(predictor, image, points_per_side, nms_thresh)
        if save_dir is not None:
            save_png_atomic((e * 255).round().astype(np.uint8), save_dir / f"{s.name}.png")
        c = edge_counts(e, gts, thresholds)
        counts.append(c)
        f, k = image_ois(c)
        per_image.append({"name": s.name, "best_F": f, "best_threshold_index": k, "annotators": len(gts)})
    scores = edge_scores(counts, thresholds)
    protocol = {
        "grid": f"{points_per_side}x{points_per_side} foreground points, multimask (3 per point)",
        "filtering": "none (no predicted-IoU or stability thresholds); empty masks dropped",
        "mask_nms": f"box NMS, IoU {nms_thresh}, scores = predicted IoU",
        "edges": "Sobel magnitude of sigmoid(logits), zero outside 1 px of the outer boundary of the hole-filled binary mask; max over masks; divided by the max",
        "edge_nms": "pyEdgeEval fast_nms (r=1, s=5, m=1.01)",
        "benchmark": f"pyEdgeEval correspondence, max_dist 0.0075, thinning on, {thresholds} thresholds",
    }
    overall = {"images": len(per_image), **scores}
    return TaskResult("bsds-edge", protocol, overall, per_image, [("BSDS500", {k: scores[k] for k in ("ODS", "OIS", "AP", "R50")})])


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ...utils import positive_int
    from .common import fraction

    p.add_argument("--split", choices=("test", "val", "train"), default="test", help="BSDS500 split (default test)")
    p.add_argument("--nms", type=fraction, default=0.7, help="mask box-NMS IoU threshold (default 0.7)")
    p.add_argument("--thresholds", type=positive_int, default=99, help="edge thresholds (default 99)")


def load(args: argparse.Namespace) -> List[Sample]:
    from ..datasets import bsds_samples

    return bsds_samples(args.data, args.split, args.limit)


def evaluate(args: argparse.Namespace, model, predictor, data: List[Sample], maps, show: bool) -> TaskResult:
    return run(predictor, data, args.points_per_side, args.nms, args.thresholds, maps, show)
