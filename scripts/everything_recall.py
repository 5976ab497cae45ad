"""Segment-everything recall on held-out synthetic scenes, per generator setting: the share of
annotated objects that some generated mask covers at IoU >= 0.8 (and 0.5), the mean best IoU,
and the seconds each setting took, in one run (times as ratios to the plain setting). With
--overlay, one scene's masks side by side: plain grid | with use_m2m and one crop layer.

    python scripts/everything_recall.py --checkpoint tests/data/trained/teacher.pt [--scenes 10] [--overlay out.png]
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from repvit_sam import SamAutomaticMaskGenerator
from repvit_sam.evaluation.datasets import ann_to_mask
from repvit_sam.evaluation.metrics import mask_iou
from repvit_sam.inference.masks import rle_to_mask
from repvit_sam.io import load_image
from repvit_sam.registry import build_sam
from repvit_sam.synthetic import write_images
from repvit_sam.visualize import overlay

FILTERS = dict(points_per_side=16, pred_iou_thresh=0.5, stability_score_thresh=0.7, output_mode="coco_rle")
SETTINGS = {
    "16-point grid": {},
    "+ use_m2m": dict(use_m2m=True),
    "+ 1 crop layer": dict(crop_n_layers=1),
    "+ 1 crop layer (8 points a side) + use_m2m": dict(crop_n_layers=1, crop_n_points_downscale_factor=2, use_m2m=True),
    "+ 1 crop layer + use_m2m": dict(crop_n_layers=1, use_m2m=True),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny_vit_b_deep", help="the variant of --checkpoint (default: the trained teacher's)")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--scenes", type=int, default=10, help="the first N held-out scenes (seed 1, 256x256; default 10)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--overlay", type=Path, help="PNG: the first scene, plain grid | one crop layer + use_m2m")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = build_sam(args.model, checkpoint=args.checkpoint).eval()
    with tempfile.TemporaryDirectory() as tmp:
        write_images(Path(tmp), count=args.scenes, seed=1, size=(256, 256), quiet=True)
        data = json.loads((Path(tmp) / "annotations.json").read_text())
        scenes = [(load_image(Path(tmp) / "images" / i["file_name"]),
                   [ann_to_mask(a, i["height"], i["width"]) for a in data["annotations"] if a["image_id"] == i["id"]])
                  for i in data["images"]]
    rows, first_masks = [], {}
    for name, extra in SETTINGS.items():
        gen = SamAutomaticMaskGenerator(model, **FILTERS, **extra)
        best, t0 = [], time.perf_counter()
        for k, (image, gts) in enumerate(scenes):
            masks = [rle_to_mask(r["segmentation"]) for r in gen.generate(image)]
            if k == 0:
                first_masks[name] = masks
            best += [max((mask_iou(m, g) for m in masks), default=0.0) for g in gts]
        b = np.array(best)
        rows.append((name, (b >= 0.8).sum(), len(b), (b >= 0.5).mean(), b.mean(), time.perf_counter() - t0))
    print(f"{args.checkpoint}, {args.scenes} held-out scenes, {rows[0][2]} objects; filters: predicted IoU > 0.5, stability >= 0.7\n")
    print("| setting | found at IoU >= 0.8 | at 0.5 | mean best IoU | seconds | time vs plain |\n|---|--:|--:|--:|--:|--:|")
    for name, n8, n, r5, mean, sec in rows:
        print(f"| {name} | {n8} of {n} ({n8 / n:.1%}) | {r5:.1%} | {mean:.3f} | {sec:.1f} | {sec / rows[0][5]:.2f}x |")
    if args.overlay:
        def up(a: np.ndarray) -> np.ndarray:  # 2x, nearest: a 256-px scene is small on a page
            return a.repeat(2, axis=0).repeat(2, axis=1)

        image = up(scenes[0][0])
        sides = [np.asarray(overlay(image, [up(m) for m in sorted(first_masks[k], key=lambda m: -m.sum())])) for k in
                 ("16-point grid", "+ 1 crop layer + use_m2m")]
        gap = np.full((image.shape[0], 8, 3), 255, np.uint8)
        tmp_out = args.overlay.with_name(args.overlay.name + ".tmp.png")
        Image.fromarray(np.concatenate([sides[0], gap, sides[1]], axis=1)).save(tmp_out)
        tmp_out.replace(args.overlay)
        print(f"\nwrote {args.overlay}")


if __name__ == "__main__":
    main()
