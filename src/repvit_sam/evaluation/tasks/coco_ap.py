"""coco-ap: a detector's boxes as prompts -> instance masks -> COCO mask AP (pycocotools).

Per image: the detections of that image, highest score first, at most ``max_dets`` (100, the
COCO limit); each box (XYWH -> XYXY) is decoded alone with a single output (or by the
selection rule); the mask is RLE-encoded with the detector's category and a score from
``score_rule``: ``detector`` (the detection score, as SAM's protocol) or ``detector*iou`` (times
the predicted IoU). COCOeval (iouType segm) over the evaluated images gives AP, AP50, AP75,
AP_S, AP_M, AP_L. SegInW: the same per dataset folder, then the mean AP over datasets.
"""

from __future__ import annotations

import argparse

from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from ..datasets import CocoDataset, load_detections
from ..metrics import AP_KEYS, coco_segm_ap
from .common import TaskResult, decode, progress, select

NAME = "coco-ap"
HELP = "mask AP with a detector's boxes as prompts (COCO, LVIS, SegInW)"
GRID = 0  # default points per side of the dense tasks' grid (0: no grid)
MAP = None  # what the per-image PNGs under OUT/maps show (None: no maps)

SCORE_RULES = ("detector", "detector*iou")


def segment_detections(predictor, dataset: CocoDataset, detections: Path, max_dets: int = 100, score_rule: str = "detector",
                       select_rule: str = "single", show_progress: bool = True):
    """(COCO results list, per-image records) for one dataset."""
    from ...inference.masks import mask_to_rle
    from ...io import load_image

    if score_rule not in SCORE_RULES:
        raise ValueError(f"unknown score rule {score_rule!r}; choose from {', '.join(SCORE_RULES)}")
    dets = load_detections(detections, [im.id for im in dataset.images])
    results: List[Dict[str, Any]] = []
    per_image: List[Dict[str, Any]] = []
    for img in progress(dataset.images, f"coco-ap {dataset.name}", enabled=show_progress):
        ds = sorted(dets[img.id], key=lambda d: -float(d["score"]))[:max_dets]
        rec: Dict[str, Any] = {"image_id": img.id, "file": img.path.name, "detections": len(ds)}
        if ds:
            predictor.set_image(load_image(img.path, max_pixels=None))
            boxes = np.array([[d["bbox"][0], d["bbox"][1], d["bbox"][0] + d["bbox"][2], d["bbox"][1] + d["bbox"][3]] for d in ds], dtype=np.float64)
            h, w = predictor.original_size
            boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
            boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1e-3)
            masks, scores, _ = decode(predictor, boxes=boxes, multimask=select_rule != "single")
            pick = select(masks, scores, select_rule if select_rule != "oracle" else "best-score")
            pred_iou = []
            for d, m, s, k in zip(ds, masks, scores, pick):
                score = float(d["score"]) * (float(s[k]) if score_rule == "detector*iou" else 1.0)
                results.append({"image_id": img.id, "category_id": int(d["category_id"]), "segmentation": mask_to_rle(m[k]), "score": score})
                pred_iou.append(float(s[k]))
            rec["mean_pred_iou"] = float(np.mean(pred_iou))
        per_image.append(rec)
    return results, per_image


def run(predictor, datasets: Sequence[CocoDataset], detections: Sequence[Path], max_dets: int = 100, score_rule: str = "detector",
        select_rule: str = "single", seginw: bool = False, show_progress: bool = True) -> TaskResult:
    table = []
    per_image: List[Dict[str, Any]] = []
    per_dataset: Dict[str, Dict[str, float]] = {}
    for ds, det in zip(datasets, detections):
        results, recs = segment_detections(predictor, ds, det, max_dets, score_rule, select_rule, show_progress)
        ap = coco_segm_ap(ds.data, results, [im.id for im in ds.images])
        per_dataset[ds.name] = ap
        table.append((ds.name, ap))
        per_image += [{"dataset": ds.name, **r} for r in recs]
    overall: Dict[str, Any] = {"images": len(per_image)}
    if len(datasets) == 1 and not seginw:
        overall.update(per_dataset[datasets[0].name])
    else:
        overall["per_dataset"] = per_dataset
        overall["mean_AP"] = float(np.nanmean([v["AP"] for v in per_dataset.values()]))
        table.append(("mean over datasets", {k: float(np.nanmean([v[k] for v in per_dataset.values()])) for k in AP_KEYS}))
    protocol = {
        "prompts": "detector boxes [x, y, w, h] -> XYXY, clipped to the image, one box per decode",
        "max_dets_per_image": max_dets,
        "score_rule": score_rule,
        "select": select_rule,
        "metric": "pycocotools COCOeval iouType=segm over the evaluated images (AP in percent)",
        "detections": [str(d) for d in detections],
        "annotations": [str(d.ann_file) for d in datasets],
        "seginw_mean": bool(seginw),
    }
    return TaskResult("coco-ap", protocol, overall, per_image, table)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ...utils import positive_int
    from .common import add_coco_paths

    add_coco_paths(p)
    p.add_argument("--detections", type=Path, required=True, metavar="PATH",
                   help="COCO results JSON of detector boxes; with --seginw a folder of <dataset>.json")
    p.add_argument("--seginw", action="store_true", help="ROOT holds SegInW dataset folders: AP per dataset and their mean")
    p.add_argument("--max-dets", type=positive_int, default=100, help="detections per image, highest score first (default 100)")
    p.add_argument("--score-rule", choices=SCORE_RULES, default="detector", help="mask score (default: the detector's)")
    p.add_argument("--select", choices=("single", "best-score"), default="single", help="mask per box (default single output)")


def load(args: argparse.Namespace) -> List[Tuple[CocoDataset, Path]]:
    from ...cli import UsageError
    from .. import datasets as D

    if not args.detections.exists():
        raise UsageError(f"--detections: not found: {args.detections}")
    if not args.seginw:
        ann, images = D.default_coco_paths(args.data, args.annotations, args.images)
        return [(D.load_coco(ann, images, args.limit), args.detections)]
    if not args.detections.is_dir():
        raise D.DatasetError(f"--seginw needs --detections to be a folder of <dataset>.json files: {args.detections}")
    out = []
    for name, ann, images in D.seginw_datasets(args.data):
        det = args.detections / f"{name}.json"
        if not det.is_file():
            raise D.DatasetError(f"detections for SegInW dataset {name!r} not found: {det}")
        out.append((D.load_coco(ann, images, args.limit, name=name), det))
    return out


def evaluate(args: argparse.Namespace, model, predictor, data: List[Tuple[CocoDataset, Path]], maps, show: bool) -> TaskResult:
    return run(predictor, [d for d, _ in data], [p for _, p in data], args.max_dets, args.score_rule, args.select, args.seginw, show)
