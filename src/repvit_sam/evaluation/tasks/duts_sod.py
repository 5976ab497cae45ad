"""duts-sod: zero-shot salient-object segmentation on DUTS-TE (our protocol; the RepViT-SAM
paper reports MAE but its repository gives no prompting protocol).

Per image: SamAutomaticMaskGenerator (``points_per_side`` grid, default thresholds: predicted
IoU > 0.88, stability >= 0.95, box NMS 0.7, no crops). Boundary prior: a mask covering more
than ``max_border`` of the image's border pixels is background, one smaller than ``min_area``
of the image is clutter; every other mask m votes ``predicted_iou(m) * (1 - border(m) /
max_border)`` on its pixels. The saliency map is the per-pixel maximum of the votes divided by
the image's largest vote (all zero if no mask is left). Metrics: MAE, S-measure and max
F-measure (beta^2 = 0.3) against the binary mask.
"""

from __future__ import annotations

import argparse

from typing import Any, Dict, List, Optional

import numpy as np

from ..datasets import Sample, load_binary_mask
from ..metrics import SodMeter
from .common import TaskResult, progress


NAME = "duts-sod"
HELP = "salient-object segmentation on DUTS-TE: MAE, S-measure, max F"
GRID = 16  # default points per side of the dense tasks' grid (0: no grid)
MAP = 'saliency map'  # what the per-image PNGs under OUT/maps show (None: no maps)

def everything(model, predictor, points_per_side: int):
    from ...inference.amg import SamAutomaticMaskGenerator

    # the caching predictor: the grid reuses the stored embedding
    return SamAutomaticMaskGenerator(model, points_per_side=points_per_side, output_mode="binary_mask", predictor=predictor)


def border_fraction(mask: np.ndarray) -> float:
    """Fraction of the image's border pixels that the mask covers."""
    border = np.concatenate([mask[0], mask[-1], mask[1:-1, 0], mask[1:-1, -1]])
    return float(border.mean())


def saliency_map(records: List[Dict[str, Any]], shape, max_border: float = 0.2, min_area: float = 0.005) -> np.ndarray:
    sal = np.zeros(shape, dtype=np.float64)
    n = float(shape[0] * shape[1])
    for r in records:
        m = r["segmentation"]
        b = border_fraction(m)
        if b > max_border or r["area"] / n < min_area:
            continue
        np.maximum(sal, np.where(m, r["predicted_iou"] * (1.0 - b / max_border), 0.0), out=sal)
    return sal / sal.max() if sal.max() > 0 else sal


def run(model, predictor, samples: List[Sample], points_per_side: int = 16, max_border: float = 0.2, min_area: float = 0.005,
        save_dir: Optional[Any] = None, show_progress: bool = True) -> TaskResult:
    from ...io import load_image, save_png_atomic

    gen = everything(model, predictor, points_per_side)
    meter = SodMeter()
    per_image = []
    for s in progress(samples, "duts-sod", enabled=show_progress):
        image = load_image(s.image, max_pixels=None)
        gt = load_binary_mask(s.label, image.shape[:2])
        sal = saliency_map(gen.generate(image), image.shape[:2], max_border, min_area)
        if save_dir is not None:
            save_png_atomic((sal * 255).round().astype(np.uint8), save_dir / f"{s.name}.png")
        per_image.append({"name": s.name, **meter.step(sal, gt)})
    scores = meter.results()
    protocol = {
        "masks": f"SamAutomaticMaskGenerator(points_per_side={points_per_side}, pred_iou_thresh=0.88, stability_score_thresh=0.95, box_nms_thresh=0.7, crop_n_layers=0)",
        "saliency_rule": f"boundary prior: drop masks covering > {max_border} of the border pixels or < {min_area} of the image; "
                         f"vote predicted_iou * (1 - border/{max_border}); per-pixel max; divided by the max",
        "metrics": "MAE (own), S-measure and max F-measure beta^2=0.3 (pysodmetrics)",
    }
    return TaskResult("duts-sod", protocol, {"images": len(per_image), **scores}, per_image, [("DUTS-TE", scores)])


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .common import fraction

    p.add_argument("--max-border", type=fraction, default=0.2, help="masks covering more of the image border are background (default 0.2)")
    p.add_argument("--min-area", type=fraction, default=0.005, help="masks smaller than this fraction of the image are ignored (default 0.005)")


def load(args: argparse.Namespace) -> List[Sample]:
    from ..datasets import duts_samples

    return duts_samples(args.data, args.limit)


def evaluate(args: argparse.Namespace, model, predictor, data: List[Sample], maps, show: bool) -> TaskResult:
    return run(model, predictor, data, args.points_per_side, args.max_border, args.min_area, maps, show)
