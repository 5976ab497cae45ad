"""Held-out mIoU per category of a COCO set, with the protocol of `finetune`'s validation
(box = the mask's box, single output; 1 point = the pixel farthest from the boundary, best of 3
by predicted IoU). The validation reports area ranges only; this says which kinds of object a
model fails on (on the synthetic sets: ellipse, polygon, ring, star, bar).

    python scripts/miou_by_category.py --model tiny_vit_b_deep --checkpoint tests/data/trained/teacher.pt \
        --data WORK/val/annotations.json --images WORK/val/images
"""
import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from repvit_sam.evaluation.datasets import ann_to_mask
from repvit_sam.registry import build_sam
from repvit_sam.train.data import _read_json, read_entries
from repvit_sam.train.validate import AREA_RANGES, _prompt_records, coco_records


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="COCO instances JSON with categories")
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--min-area", type=int, default=16, help="as finetune's validation (default 16)")
    args = p.parse_args()
    torch.set_num_threads(1)

    entries, _ = read_entries(args.data, args.images)
    coco = coco_records(entries, args.min_area)  # the validation's instances (category collapsed to 1)
    raw = _read_json(args.data)
    names = {c["id"]: c["name"] for c in raw.get("categories", [])}
    # the category of each validation instance: the raw annotation with the same mask
    # (coco_records numbers images by their 1-based position in ``entries``)
    raw_masks = {}
    category = {}
    for ann in coco["annotations"]:
        entry = entries[ann["image_id"] - 1]
        if ann["image_id"] not in raw_masks:
            raw_masks[ann["image_id"]] = [(a.get("category_id"), ann_to_mask(a, entry.height, entry.width))
                                          for a in entry.anns if not a.get("iscrowd")]
        mask = ann_to_mask(ann, entry.height, entry.width)
        category[ann["id"]] = next((c for c, m in raw_masks[ann["image_id"]] if np.array_equal(m, mask)), None)

    model = build_sam(args.model, checkpoint=args.checkpoint).eval()
    with torch.no_grad():
        records = _prompt_records(model, coco, 1, False)
    groups = defaultdict(list)
    for rec in (r for per_image in records for r in per_image["instances"]):
        name = names.get(category.get(rec["ann_id"]), "?")
        size = next(k for k, (lo, hi) in AREA_RANGES.items() if lo <= rec["area"] < hi)
        for key in (name, f"{name} / {size}"):
            groups[key].append((rec["box_iou"], rec["point_iou"]))
    print(f"{args.model} ({args.checkpoint.name}) on {args.data}: {sum(len(v) for k, v in groups.items() if '/' not in k)} instances\n")
    print("| category | instances | box mIoU | 1-point mIoU | box IoU < 0.5 |")
    print("|---|--:|--:|--:|--:|")
    for key in sorted(groups):
        v = np.asarray(groups[key])
        print(f"| {key} | {len(v)} | {v[:, 0].mean():.3f} | {v[:, 1].mean():.3f} | {(v[:, 0] < 0.5).mean():.0%} |")


if __name__ == "__main__":
    main()
