"""coco-prompt: mIoU of masks from ground-truth prompts on COCO / LVIS instances.

Per instance (crowd and empty annotations skipped): a box prompt (the annotation's bbox) and a
one-point prompt (the mask pixel farthest from the mask boundary); then, optionally, ``refine``
corrective clicks, each at the point farthest from the boundary of the larger error region
(false negative: positive click; false positive: negative click), decoded with all clicks so
far, the previous low-res logits as mask input, and a single output. The candidate mask of
each first prompt is chosen by a rule (``single`` / ``best-score`` / ``oracle``), recorded.
"""

from __future__ import annotations

import argparse

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..datasets import CocoDataset, ann_to_mask
from ..metrics import mask_iou, mean_iou
from .common import TaskResult, decode, farthest_point, next_click, progress, select


NAME = "coco-prompt"
HELP = "mIoU from ground-truth box and one-point prompts (COCO / LVIS instances)"
GRID = 0  # default points per side of the dense tasks' grid (0: no grid)
MAP = None  # what the per-image PNGs under OUT/maps show (None: no maps)

def run(predictor, dataset: CocoDataset, prompts: Sequence[str] = ("box", "point"), select_box: str = "single",
        select_point: str = "best-score", refine: int = 0, max_instances: Optional[int] = None,
        show_progress: bool = True) -> TaskResult:
    from ...io import load_image

    ious: Dict[str, List[float]] = {p: [] for p in prompts}
    click_ious: List[List[float]] = [[] for _ in range(refine)]
    per_image: List[Dict[str, Any]] = []
    for img in progress(dataset.images, "coco-prompt", enabled=show_progress):
        image = load_image(img.path, max_pixels=None)
        if image.shape[:2] != (img.height, img.width):
            from ..datasets import DatasetError

            raise DatasetError(f"{img.path} is {image.shape[1]}x{image.shape[0]} but the annotations say {img.width}x{img.height}")
        anns = [a for a in img.anns if not a.get("iscrowd")]
        gts = [ann_to_mask(a, img.height, img.width) for a in anns]
        keep = [i for i, g in enumerate(gts) if g.any()]
        if max_instances is not None:
            keep = keep[:max_instances]
        anns, gts = [anns[i] for i in keep], [gts[i] for i in keep]
        records: List[Dict[str, Any]] = [{"ann_id": a.get("id"), "category_id": a.get("category_id"), "area": int(g.sum())} for a, g in zip(anns, gts)]
        if anns:
            predictor.set_image(image)
        if anns and "box" in prompts:
            boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns], dtype=np.float64)
            boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1e-3)  # zero-width boxes still valid
            masks, scores, _ = decode(predictor, boxes=boxes, multimask=select_box != "single")
            pick = select(masks, scores, select_box, gts)
            for r, m, k, g in zip(records, masks, pick, gts):
                r["box_iou"] = mask_iou(m[k], g)
                ious["box"].append(r["box_iou"])
        if anns and "point" in prompts:
            pts = np.array([farthest_point(g) for g in gts], dtype=np.float64)[:, None, :]
            labels = np.ones((len(gts), 1), dtype=np.int64)
            masks, scores, low = decode(predictor, points=pts, labels=labels, multimask=select_point != "single")
            pick = select(masks, scores, select_point, gts)
            preds = [m[k] for m, k in zip(masks, pick)]
            logits = np.stack([lo[k] for lo, k in zip(low, pick)])[:, None]
            for r, p, g, pt in zip(records, preds, gts, pts):
                r["point"] = [int(v) for v in pt[0]]
                r["point_iou"] = mask_iou(p, g)
                ious["point"].append(r["point_iou"])
            clicks = [[(int(pt[0, 0]), int(pt[0, 1]), 1)] for pt in pts]
            for it in range(refine):
                for i, (p, g) in enumerate(zip(preds, gts)):
                    c = next_click(p, g)
                    clicks[i].append(c if c is not None else clicks[i][-1])  # exact: repeat the last click
                pts_i = np.array([[c[:2] for c in cl] for cl in clicks], dtype=np.float64)
                lab_i = np.array([[c[2] for c in cl] for cl in clicks], dtype=np.int64)
                masks, _, low = decode(predictor, points=pts_i, labels=lab_i, mask_input=logits, multimask=False)
                preds = [m[0] for m in masks]
                logits = low[:, :1]
                for r, p, g in zip(records, preds, gts):
                    r.setdefault("refine_ious", []).append(mask_iou(p, g))
                    click_ious[it].append(r["refine_ious"][-1])
            for r, cl in zip(records, clicks):
                if refine:
                    r["clicks"] = [list(c) for c in cl]
        per_image.append({"image_id": img.id, "file": img.path.name, "instances": records})

    n_inst = sum(len(p["instances"]) for p in per_image)
    if n_inst == 0:
        from ..datasets import DatasetError

        raise DatasetError(f"{dataset.ann_file}: no non-crowd, non-empty instance masks in the images evaluated")
    overall: Dict[str, Any] = {"images": len(per_image), "instances": n_inst}
    row: Dict[str, float] = {}
    if "box" in prompts:
        overall["mIoU_box"] = row["mIoU box"] = mean_iou(ious["box"]) * 100
    if "point" in prompts:
        overall["mIoU_point"] = row["mIoU 1 point"] = mean_iou(ious["point"]) * 100
        for k, v in enumerate(click_ious):
            overall[f"mIoU_point_{k + 2}_clicks"] = row[f"mIoU {k + 2} clicks"] = mean_iou(v) * 100
    protocol = {
        "prompts": list(prompts),
        "box": "annotation bbox [x, y, w, h] -> XYXY",
        "point": "mask pixel farthest from the mask boundary (argmax of the Euclidean distance transform, image border counts as boundary)",
        "select_box": select_box,
        "select_point": select_point,
        "refine_clicks": refine,
        "refine_rule": "click at the point farthest from the boundary of the larger error region (FN: positive, FP: negative); all clicks + previous low-res logits; single output",
        "skipped": "iscrowd annotations and empty masks",
        "max_instances_per_image": max_instances,
        "annotations": str(dataset.ann_file),
        "iou_scale": "percent",
    }
    return TaskResult("coco-prompt", protocol, overall, per_image, [(dataset.name, row)])


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ...utils import non_negative_int, positive_int
    from .common import add_coco_paths

    add_coco_paths(p)
    p.add_argument("--prompts", default="box,point", help="comma-separated: box, point (default box,point)")
    p.add_argument("--select-box", choices=("single", "best-score", "oracle"), default="single",
                   help="mask chosen for a box: single output (default), best predicted IoU of 3, or best true IoU of 3")
    p.add_argument("--select-point", choices=("single", "best-score", "oracle"), default="best-score",
                   help="mask chosen for one point (default best-score of 3 candidates)")
    p.add_argument("--refine", type=non_negative_int, default=0, metavar="K", help="corrective clicks after the first point (default 0)")
    p.add_argument("--max-instances", type=positive_int, metavar="N", help="at most N instances per image")


def _prompts(args: argparse.Namespace) -> List[str]:
    from ...cli import UsageError

    prompts = [s.strip() for s in args.prompts.split(",") if s.strip()]
    bad = [s for s in prompts if s not in ("box", "point")]
    if bad or not prompts:
        raise UsageError(f"--prompts takes box and/or point, got {args.prompts!r}")
    if args.refine and "point" not in prompts:
        raise UsageError("--refine needs point prompts (--prompts point or box,point)")
    return prompts


def load(args: argparse.Namespace) -> CocoDataset:
    from ..datasets import default_coco_paths, load_coco

    _prompts(args)
    ann, images = default_coco_paths(args.data, args.annotations, args.images)
    return load_coco(ann, images, args.limit)


def evaluate(args: argparse.Namespace, model, predictor, data: CocoDataset, maps, show: bool) -> TaskResult:
    return run(predictor, data, _prompts(args), args.select_box, args.select_point, args.refine, args.max_instances, show)
