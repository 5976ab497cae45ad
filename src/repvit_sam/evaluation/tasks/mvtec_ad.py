"""mvtec-ad: zero-shot pixel-level anomaly segmentation on MVTec-AD (our protocol; the
RepViT-SAM paper reports pixel max-F1 but gives no prompting protocol in its repository).

Per image: SamAutomaticMaskGenerator (``points_per_side`` grid, default thresholds). Masks
larger than ``max_area`` of the image are the object or the background (normal); each smaller
mask is a candidate defect and scores ``predicted_iou * (1 - area / max_area)`` on its pixels
(small, confident regions score highest). The anomaly map is the per-pixel maximum (0 where
no candidate). Metric: pixel max-F1 over thresholds, pooling all test pixels of a category
('good' images included, all-normal), then the mean over categories.
"""

from __future__ import annotations

import argparse

from typing import Any, Dict, List, Optional

import numpy as np

from ..datasets import Sample, load_binary_mask
from ..metrics import MaxF1
from .common import TaskResult, progress
from .duts_sod import everything


NAME = "mvtec-ad"
HELP = "zero-shot anomaly segmentation on MVTec-AD: pixel max-F1"
GRID = 16  # default points per side of the dense tasks' grid (0: no grid)
MAP = 'anomaly map'  # what the per-image PNGs under OUT/maps show (None: no maps)

def anomaly_map(records: List[Dict[str, Any]], shape, max_area: float = 0.1) -> np.ndarray:
    out = np.zeros(shape, dtype=np.float64)
    n = float(shape[0] * shape[1])
    for r in records:
        a = r["area"] / n
        if a > max_area:
            continue
        np.maximum(out, np.where(r["segmentation"], r["predicted_iou"] * (1.0 - a / max_area), 0.0), out=out)
    return np.clip(out, 0.0, 1.0)


def run(model, predictor, samples: List[Sample], points_per_side: int = 16, max_area: float = 0.1,
        save_dir: Optional[Any] = None, show_progress: bool = True) -> TaskResult:
    from ...io import load_image, save_png_atomic

    gen = everything(model, predictor, points_per_side)
    meters: Dict[str, MaxF1] = {}
    per_image = []
    for s in progress(samples, "mvtec-ad", enabled=show_progress):
        image = load_image(s.image, max_pixels=None)
        gt = load_binary_mask(s.label, image.shape[:2])
        amap = anomaly_map(gen.generate(image), image.shape[:2], max_area)
        if save_dir is not None:
            (save_dir / s.group).mkdir(parents=True, exist_ok=True)
            save_png_atomic((amap * 255).round().astype(np.uint8), save_dir / s.group / f"{s.name.split('/', 1)[1].replace('/', '_')}.png")
        meters.setdefault(s.group, MaxF1()).update(amap, gt)
        per_image.append({"name": s.name, "category": s.group, "anomalous": bool(gt.any()), "max_score": float(amap.max())})
    per_cat = {c: m.result()[0] * 100 for c, m in meters.items()}
    mean_f1 = float(np.mean(list(per_cat.values())))
    table = [(c, {"pixel max-F1": v}) for c, v in per_cat.items()] + [("mean", {"pixel max-F1": mean_f1})]
    protocol = {
        "masks": f"SamAutomaticMaskGenerator(points_per_side={points_per_side}, default thresholds, crop_n_layers=0)",
        "anomaly_rule": f"masks <= {max_area} of the image are defect candidates scoring predicted_iou * (1 - area/{max_area}); per-pixel max",
        "metric": "pixel max-F1 (percent) over 1000 thresholds, pooled per category, mean over categories",
    }
    overall = {"images": len(per_image), "pixel_max_F1": mean_f1, "per_category": per_cat}
    return TaskResult("mvtec-ad", protocol, overall, per_image, table)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .common import fraction

    p.add_argument("--categories", help="comma-separated categories (default: all under ROOT)")
    p.add_argument("--max-area", type=fraction, default=0.1, help="largest defect candidate, as a fraction of the image (default 0.1)")


def load(args: argparse.Namespace) -> List[Sample]:
    from ..datasets import mvtec_samples

    cats = [c.strip() for c in args.categories.split(",") if c.strip()] if args.categories else None
    return mvtec_samples(args.data, cats, args.limit)


def evaluate(args: argparse.Namespace, model, predictor, data: List[Sample], maps, show: bool) -> TaskResult:
    return run(model, predictor, data, args.points_per_side, args.max_area, maps, show)
