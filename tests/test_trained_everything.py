"""Segment-everything with the trained tiny teacher on held-out synthetic scenes: the share of
annotated objects found by some generated mask at IoU >= 0.8 (the issue asks for >= 90%).

Measured on all 10 held-out scenes of the ``synthetic_held_out`` fixture (55 objects): on 3
scenes (19 objects) one object moves the figure by 5 points. The settings: a 16-point grid,
one crop layer (2 x 2 crops, 8 points a side), SAM 2's mask-to-mask refinement (``use_m2m``),
predicted IoU >= 0.5 and stability >= 0.7 (a 256-px model's scores are calibrated lower than
SAM's 0.88 / 0.95)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from repvit_sam import SamAutomaticMaskGenerator
from repvit_sam.evaluation.datasets import ann_to_mask
from repvit_sam.evaluation.metrics import mask_iou
from repvit_sam.inference.masks import rle_to_mask
from repvit_sam.io import load_image

FILTERS = dict(points_per_side=16, pred_iou_thresh=0.5, stability_score_thresh=0.7, output_mode="coco_rle")
EVERYTHING = dict(FILTERS, crop_n_layers=1, crop_n_points_downscale_factor=2, use_m2m=True)
FOUND_AT_HALF = 0.3  # an untrained model finds none

pytestmark = pytest.mark.usefixtures("one_thread")  # the tiny model decodes fastest on one thread (24 s against 49 s here)


def _best_ious(model, held_out, scenes: int = 10, **options) -> np.ndarray:
    """For each annotated object of the first ``scenes`` scenes, its best IoU with a generated mask."""
    data = json.loads((held_out / "annotations.json").read_text())
    gen = SamAutomaticMaskGenerator(model, **(options or EVERYTHING))
    best_ious = []
    for info in data["images"][:scenes]:
        image = load_image(held_out / "images" / info["file_name"])
        masks = [rle_to_mask(r["segmentation"]) for r in gen.generate(image)]
        for a in (a for a in data["annotations"] if a["image_id"] == info["id"]):
            g = ann_to_mask(a, info["height"], info["width"])
            best = max((mask_iou(m, g) for m in masks), default=0.0)
            best_ious.append(best)
    return np.array(best_ious)


def test_everything_finds_the_objects(trained_teacher, synthetic_held_out):
    best = _best_ious(trained_teacher, synthetic_held_out)
    recall, recall50 = float((best >= 0.8).mean()), float((best >= 0.5).mean())
    print(f"objects found (of {len(best)}): {recall:.3f} at IoU >= 0.8, {recall50:.3f} at IoU >= 0.5")
    assert len(best) == 55
    assert recall50 >= FOUND_AT_HALF, (recall50, best)
    assert recall >= 0.9, f"segment-everything finds {recall:.1%} of the objects at IoU >= 0.8 (target 90%): {np.round(best, 2)}"


def test_m2m_brings_the_masks_closer(trained_teacher, synthetic_held_out):
    """The refinement is what sharpens the masks: on the whole image (no crops), the same grid
    with use_m2m finds each object with a higher IoU on average, and more of them at 0.8."""
    plain = _best_ious(trained_teacher, synthetic_held_out, scenes=5, **FILTERS)
    refined = _best_ious(trained_teacher, synthetic_held_out, scenes=5, **FILTERS, use_m2m=True)
    print(f"mean best IoU {plain.mean():.3f} -> {refined.mean():.3f}; at 0.8: {(plain >= 0.8).mean():.3f} -> {(refined >= 0.8).mean():.3f}")
    assert refined.mean() > plain.mean() + 0.02
    assert (refined >= 0.8).sum() > (plain >= 0.8).sum()
