"""Validation with prompts on held-out images: the protocol of ``repvit-sam eval coco-prompt``.

Per instance: a box (its box), one point (the mask pixel farthest from the boundary, best of 3
candidates by predicted IoU), then ``clicks`` correction clicks, each at the point farthest from
the boundary of the larger error region, decoded with all clicks so far and the previous low-res
logits. Reported: mIoU for the box, for 1 point and for 1 point + k clicks (the clicks-vs-mIoU
curve), overall and per COCO area range of the instance's mask at the original image size:
small < 32², medium 32² to 96², large >= 96² pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from .data import ImageEntry, decode_entry

if TYPE_CHECKING:
    from .trainer import ShardedValidation

AREA_RANGES = {"small": (0, 32**2), "medium": (32**2, 96**2), "large": (96**2, float("inf"))}


def coco_records(entries: Sequence[ImageEntry], min_area: int) -> Dict[str, Any]:
    """A COCO instances dict of the usable instances of ``entries`` (images present and of the
    annotated size), with compressed RLE, mask-derived boxes (XYWH, W = x_max - x_min) and
    pixel areas, for :func:`repvit_sam.evaluation.tasks.coco_prompt.run`."""
    from ..inference.masks import mask_to_box_xywh, mask_to_rle
    from ..io import load_image

    images, anns = [], []
    for i, e in enumerate(entries, 1):
        if e.path is None or not Path(e.path).is_file():
            continue
        if load_image(e.path).shape[:2] != (e.height, e.width):
            continue
        masks, _ = decode_entry(e, min_area)
        if not masks:
            continue
        images.append({"id": i, "file_name": str(e.path), "height": e.height, "width": e.width})
        for m in masks:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "iscrowd": 0, "area": int(m.sum()),
                         "bbox": mask_to_box_xywh(m), "segmentation": mask_to_rle(m)})
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}


def summarise_records(per_image: List[Dict[str, Any]], clicks: int) -> Dict[str, Any]:
    """mIoU per prompt and area range from coco-prompt's per-instance records (fractions 0..1)."""
    out: Dict[str, Any] = {}
    groups = {"all": lambda a: True, **{k: (lambda a, r=r: r[0] <= a < r[1]) for k, r in AREA_RANGES.items()}}
    recs = [r for p in per_image for r in p["instances"]]
    for g, keep in groups.items():
        sel = [r for r in recs if keep(r["area"])]
        suffix = "" if g == "all" else f"_{g}"
        out[f"instances{suffix}"] = len(sel)
        if not sel:
            continue
        out[f"miou_box{suffix}"] = float(np.mean([r["box_iou"] for r in sel]))
        out[f"miou_point{suffix}"] = float(np.mean([r["point_iou"] for r in sel]))
        for k in range(clicks):
            out[f"miou_point_{k + 2}_clicks{suffix}"] = float(np.mean([r["refine_ious"][k] for r in sel]))
    return out


def shard_coco(coco: Dict[str, Any], rank: int, world_size: int) -> Dict[str, Any]:
    """The images ``rank, rank + world_size, ...`` of ``coco`` and their annotations: one rank's
    share of a validation set (every image in exactly one share)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    images = coco["images"][rank::world_size]
    ids = {im["id"] for im in images}
    return {**coco, "images": images, "annotations": [a for a in coco["annotations"] if a["image_id"] in ids]}


def prompt_validation_part(model, coco: Dict[str, Any], clicks: int, rank: int = 0, world_size: int = 1,
                           show_progress: bool = False) -> List[Dict[str, Any]]:
    """One rank's per-image records of the coco-prompt protocol on its share of ``coco``; the
    shares of all ranks, joined by :func:`combine_validation_parts`, give what
    :func:`prompt_validation` gives on the whole set."""
    return _prompt_records(model, shard_coco(coco, rank, world_size), clicks, show_progress)


def combine_validation_parts(parts: Sequence[List[Dict[str, Any]]], clicks: int) -> Dict[str, Any]:
    """The summary of every rank's :func:`prompt_validation_part`, in image order (so the
    figures do not depend on how many ranks computed them)."""
    per_image = sorted((r for part in parts for r in part), key=lambda r: r["image_id"])
    return summarise_records(per_image, clicks)


def sharded_prompt_validation(model, coco: Optional[Dict[str, Any]], clicks: int,
                              on_result: Optional[Callable[[int, Dict[str, Any]], None]] = None) -> Optional[ShardedValidation]:
    """The coco-prompt validation of ``model`` on ``coco`` as a trainer
    :class:`~.trainer.ShardedValidation`: each rank scores its share of the images and rank 0
    summarises them all (``on_result(step, summary)`` there). None without held-out instances."""
    from .trainer import ShardedValidation  # at call time: the trainer imports torch

    if not coco or not coco["annotations"]:
        return None

    def combine(step: int, parts: List[Any]) -> Dict[str, Any]:
        res = {**combine_validation_parts(parts, clicks), "images_per_rank": [len(p) for p in parts]}
        if on_result is not None:
            on_result(step, res)
        return res

    return ShardedValidation(part=lambda _step, rank, world: prompt_validation_part(model, coco, clicks, rank, world),
                             combine=combine)


def prompt_validation(model, coco: Dict[str, Any], clicks: int, show_progress: bool = False) -> Dict[str, Any]:
    """Run the coco-prompt protocol with ``model`` (eval mode) on ``coco`` (see
    :func:`coco_records`) and summarise it."""
    return summarise_records(_prompt_records(model, coco, clicks, show_progress), clicks)


def _prompt_records(model, coco: Dict[str, Any], clicks: int, show_progress: bool) -> List[Dict[str, Any]]:
    import torch

    from ..evaluation.datasets import CocoDataset, CocoImage
    from ..evaluation.tasks import coco_prompt
    from ..inference.predictor import SamPredictor

    by_image: Dict[int, list] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    images = [CocoImage(im["id"], Path(im["file_name"]), im["height"], im["width"], by_image.get(im["id"], [])) for im in coco["images"]]
    dataset = CocoDataset("validation", Path("validation.json"), coco, images)
    with torch.no_grad():
        result = coco_prompt.run(SamPredictor(model, fast_decoder=False), dataset, ("box", "point"), "single", "best-score", clicks,
                                 show_progress=show_progress)
    return result.per_image


def click_curve_png(summary: Dict[str, Any], clicks: int, path: Path, title: str = "") -> None:
    """Plot mIoU against the number of clicks (1 point, then each correction click) for all
    instances and each area range, with the box mIoU as a dashed line; written atomically."""
    from PIL import Image, ImageDraw

    from ..io import save_png_atomic

    W, H, L, R, T, B = 640, 400, 60, 130, 40, 50
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    xs = list(range(1, clicks + 2))
    px = lambda k: L + (k - 1) * (W - L - R) / max(1, clicks)  # noqa: E731
    py = lambda v: T + (1 - v) * (H - T - B)  # noqa: E731
    d.rectangle([L, T, W - R, H - B], outline="black")
    for v in np.linspace(0, 1, 6):
        d.line([L - 4, py(v), L, py(v)], fill="black")
        d.text((8, py(v) - 6), f"{v:.1f}", fill="black")
        d.line([L, py(v), W - R, py(v)], fill=(225, 225, 225))
    for k in xs:
        d.text((px(k) - 3, H - B + 6), str(k), fill="black")
    d.text(((W - R) / 2 - 20, H - 22), "clicks", fill="black")
    d.text((L, 12), title or "mIoU vs clicks (box: dashed)", fill="black")
    colors = {"all": (0, 0, 0), "small": (214, 39, 40), "medium": (31, 119, 180), "large": (44, 160, 44)}
    for i, (g, col) in enumerate(colors.items()):
        suffix = "" if g == "all" else f"_{g}"
        ys = [summary.get(f"miou_point{suffix}")] + [summary.get(f"miou_point_{k + 2}_clicks{suffix}") for k in range(clicks)]
        if any(y is None for y in ys):
            continue
        pts = [(px(k), py(y)) for k, y in zip(xs, ys)]
        d.line(pts, fill=col, width=3 if g == "all" else 2)
        for p in pts:
            d.ellipse([p[0] - 3, p[1] - 3, p[0] + 3, p[1] + 3], fill=col)
        box = summary.get(f"miou_box{suffix}")
        if box is not None:
            for x0 in range(L, W - R, 12):
                d.line([x0, py(box), min(x0 + 6, W - R), py(box)], fill=col)
        n = summary.get(f"instances{suffix}", 0)
        d.text((W - R + 8, T + 18 * i), f"{g} (n={n})", fill=col)
    save_png_atomic(img, path)
