"""SamAutomaticMaskGenerator (inference/amg/generator.py): the plain reference algorithm on tiny
random models (CPU), with segment_anything's records and options.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repvit_sam import build_from_config
from repvit_sam.inference.amg import SamAutomaticMaskGenerator
from repvit_sam.inference.amg.utils import build_point_grid, generate_crop_boxes
from repvit_sam.inference.masks import (
    area_from_rle,
    mask_to_box_xywh,
    rle_to_mask,
    uncompressed_rle_to_mask,
)

from conftest import TINY, randomize_


@pytest.fixture(scope="module", params=sorted(TINY))
def model(request):
    """A random-weight model of each tiny variant (tiny_repvit, tiny_vit_t, tiny_vit_b)."""
    torch.manual_seed(0)
    return randomize_(build_from_config(TINY[request.param]))


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, :] = (30, 60, 90)
    img[10:30, 8:40] = (220, 200, 40)  # a bright rectangle: structure for the decoder
    return np.clip(img.astype(int) + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)


def _gen(model, **kw):
    args = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    args.update(kw)
    return SamAutomaticMaskGenerator(model, **args)


@pytest.fixture(scope="module")
def records(model, image):
    return _gen(model).generate(image)


# --------------------------------------------------------------------------- records
def test_record_fields_and_types(records, image):
    h, w = image.shape[:2]
    assert len(records) > 0
    for r in records:
        assert set(r) == {"segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"}
        seg = r["segmentation"]
        assert isinstance(seg, np.ndarray) and seg.dtype == bool and seg.shape == (h, w)
        assert isinstance(r["area"], int)
        assert isinstance(r["bbox"], list) and len(r["bbox"]) == 4 and all(isinstance(v, int) for v in r["bbox"])
        assert isinstance(r["predicted_iou"], float)
        assert isinstance(r["stability_score"], float) and 0.0 <= r["stability_score"] <= 1.0
        (pt,) = r["point_coords"]
        assert len(pt) == 2 and all(isinstance(v, float) for v in pt)
        assert 0 <= pt[0] < w and 0 <= pt[1] < h
        assert r["crop_box"] == [0, 0, w, h]
    # Prompts come from the 4x4 grid: x in {8, 24, 40, 56}, y in {6, 18, 30, 42}.
    xs = {r["point_coords"][0][0] for r in records}
    ys = {r["point_coords"][0][1] for r in records}
    assert xs <= {8.0, 24.0, 40.0, 56.0} and ys <= {6.0, 18.0, 30.0, 42.0}
    # Single crop: output order is the NMS order, predicted IoU descending.
    ious = [r["predicted_iou"] for r in records]
    assert ious == sorted(ious, reverse=True)


def test_bbox_and_area_agree_with_mask(records):
    assert any(r["area"] > 0 for r in records)
    for r in records:
        m = r["segmentation"]
        assert r["area"] == int(m.sum())
        assert r["bbox"] == mask_to_box_xywh(m)


def test_output_modes_decode_to_same_masks(model, image, records):
    unc = _gen(model, output_mode="uncompressed_rle").generate(image)
    coco = _gen(model, output_mode="coco_rle").generate(image)
    assert len(unc) == len(coco) == len(records)
    h, w = image.shape[:2]
    for b, u, c in zip(records, unc, coco):
        rle = u["segmentation"]
        assert rle["size"] == [h, w] and sum(rle["counts"]) == h * w
        assert all(isinstance(v, int) for v in rle["counts"])
        np.testing.assert_array_equal(uncompressed_rle_to_mask(rle), b["segmentation"])
        assert isinstance(c["segmentation"]["counts"], str) and c["segmentation"]["size"] == [h, w]
        np.testing.assert_array_equal(rle_to_mask(c["segmentation"]), b["segmentation"])
        for k in ("area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"):
            assert b[k] == u[k] == c[k]


def test_points_per_batch_does_not_change_result(model, image, records):
    other = _gen(model, points_per_batch=5).generate(image)
    assert [r["bbox"] for r in other] == [r["bbox"] for r in records]
    assert [r["area"] for r in other] == [r["area"] for r in records]
    np.testing.assert_allclose([r["predicted_iou"] for r in other], [r["predicted_iou"] for r in records], atol=1e-5)


# --------------------------------------------------------------------------- synthetic decoder
# The random tiny model gives mostly empty or full masks; to check the pipeline on known
# answers, the predictor's decoder is replaced by one that returns, for each point, three
# discs of radius 2, 5 and 9 pixels around it (logits = radius - distance to the point) with
# predicted IoUs 0.9, 0.8 and 0.95.
RADII = (2.0, 5.0, 9.0)
IOUS = (0.9, 0.8, 0.95)


def _disc_logits(h, w, px, py, r):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return r - np.sqrt((xx - px) ** 2 + (yy - py) ** 2)


def _disc_generator(model, edit=None, **kw):
    """The reference path with the decoder replaced by known disc-shaped logits."""
    gen = _gen(model, impl="reference", **kw)
    pred = gen.predictor

    def fake_predict_torch(point_coords, point_labels, boxes=None, mask_input=None, multimask_output=True, return_logits=False):
        assert multimask_output and return_logits and point_coords.shape[1:] == (1, 2)
        assert (point_labels == 1).all()
        h, w = pred.original_size
        in_h, in_w = pred.input_size
        out = []
        for cx, cy in point_coords[:, 0, :].tolist():
            px, py = round(cx * w / in_w, 3), round(cy * h / in_h, 3)  # back to crop pixels (float32 noise off)
            discs = np.stack([_disc_logits(h, w, px, py, r) for r in RADII])
            if edit is not None:
                edit(discs, px, py)
            out.append(discs)
        logits = torch.as_tensor(np.stack(out), dtype=torch.float32)
        iou = torch.tensor(IOUS).repeat(len(out), 1)
        return logits, iou, torch.zeros(len(out), 3, 4, 4)

    pred.predict_torch = fake_predict_torch
    return gen


def _expected_stability(logits, offset=1.0):
    return float((logits > offset).sum() / (logits > -offset).sum())


def test_disc_masks_known_answer(model):
    img = np.full((40, 40, 3), 128, np.uint8)
    recs = _disc_generator(model, points_per_side=2).generate(img)
    # 4 points x 3 discs; box IoUs between discs of one point are <= (11/19)^2 < 0.7: all kept,
    # in predicted-IoU order (ties by point order): r=9 discs, then r=2, then r=5.
    pts = [(10.0, 10.0), (30.0, 10.0), (10.0, 30.0), (30.0, 30.0)]
    order = [(p, 2) for p in pts] + [(p, 0) for p in pts] + [(p, 1) for p in pts]
    assert len(recs) == 12
    for r, ((px, py), k) in zip(recs, order):
        logits = _disc_logits(40, 40, px, py, RADII[k])
        np.testing.assert_array_equal(r["segmentation"], logits > 0)
        assert r["point_coords"] == [[px, py]]
        assert r["predicted_iou"] == pytest.approx(IOUS[k])
        assert r["stability_score"] == pytest.approx(_expected_stability(logits))
        assert r["area"] == int((logits > 0).sum())
        assert r["bbox"] == mask_to_box_xywh(logits > 0)
        assert r["crop_box"] == [0, 0, 40, 40]
    # e.g. the r=9 disc around (10, 10): pixels 2..18 in x and y
    assert recs[0]["bbox"] == [2, 2, 16, 16]
    # the filters: predicted IoU (strictly greater) and stability score (>=)
    assert len(_disc_generator(model, points_per_side=2, pred_iou_thresh=0.85).generate(img)) == 8
    assert len(_disc_generator(model, points_per_side=2, pred_iou_thresh=0.9).generate(img)) == 4
    s = sorted({round(_expected_stability(_disc_logits(40, 40, 10, 10, r)), 6) for r in RADII})
    kept = _disc_generator(model, points_per_side=2, stability_score_thresh=s[1] - 1e-6).generate(img)
    assert len(kept) == 8 and all(r["stability_score"] >= s[1] - 1e-6 for r in kept)


def test_disc_masks_box_nms(model):
    img = np.full((40, 40, 3), 128, np.uint8)
    # one point, three concentric discs: box IoU(r=2, r=9) = 25/289, IoU(r=5, r=9) = 81/289 = 0.28
    grid = [np.array([[0.5, 0.5]])]
    recs = _disc_generator(model, points_per_side=None, point_grids=grid, box_nms_thresh=0.2).generate(img)
    # r=9 (0.95) first; r=2 (0.9) survives (IoU 0.087 <= 0.2), r=5 (0.8) overlaps r=9 by 0.28
    assert [r["area"] for r in recs] == [int((_disc_logits(40, 40, 20, 20, r) > 0).sum()) for r in (9.0, 2.0)]


def test_disc_masks_output_modes(model):
    img = np.full((30, 50, 3), 128, np.uint8)
    base = _disc_generator(model, points_per_side=3).generate(img)
    unc = _disc_generator(model, points_per_side=3, output_mode="uncompressed_rle").generate(img)
    coco = _disc_generator(model, points_per_side=3, output_mode="coco_rle").generate(img)
    assert len(base) == len(unc) == len(coco) > 0
    assert all(r["area"] > 0 for r in base)
    for b, u, c in zip(base, unc, coco):
        assert u["segmentation"]["size"] == [30, 50] and sum(u["segmentation"]["counts"]) == 1500
        np.testing.assert_array_equal(uncompressed_rle_to_mask(u["segmentation"]), b["segmentation"])
        assert isinstance(c["segmentation"]["counts"], str)
        np.testing.assert_array_equal(rle_to_mask(c["segmentation"]), b["segmentation"])
        assert b["area"] == area_from_rle(u["segmentation"]) == int(b["segmentation"].sum())


def test_disc_masks_crops(model):
    # 60x60, one crop layer: overlap int(0.3413 * 60) = 20, crops of 40 at x0, y0 in {0, 20}.
    img = np.full((60, 60, 3), 128, np.uint8)
    assert generate_crop_boxes((60, 60), 1, 512 / 1500)[0][1:] == [[0, 0, 40, 40], [0, 20, 40, 60], [20, 0, 60, 40], [20, 20, 60, 60]]
    recs = _disc_generator(model, points_per_side=2, crop_n_layers=1).generate(img)
    # full image: 4 points x 3 discs, all away from crop edges. Sub-crops: of the 2x2 points
    # of each crop only the one at the crop's image corner survives the crop-edge filter
    # (the others lie within 20 px of an inner crop edge).
    assert len(recs) == 24
    sub = [r for r in recs if r["crop_box"] != [0, 0, 60, 60]]
    assert [(tuple(r["crop_box"]), tuple(r["point_coords"][0])) for r in sub[::3]] == [
        ((0, 0, 40, 40), (10.0, 10.0)), ((0, 20, 40, 40), (10.0, 50.0)), ((20, 0, 40, 40), (50.0, 10.0)), ((20, 20, 40, 40), (50.0, 50.0))
    ]
    assert recs[:12] == sub  # smaller crops first (cross-crop NMS score = 1 / crop area)
    for r in recs:
        (px, py), = r["point_coords"]
        k = IOUS.index(pytest.approx(r["predicted_iou"]))
        np.testing.assert_array_equal(r["segmentation"], _disc_logits(60, 60, px, py, RADII[k]) > 0)
        x0, y0, cw, ch = r["crop_box"]
        x, y, bw, bh = r["bbox"]
        for inner, gap in ((x0 > 0, x - x0), (y0 > 0, y - y0), (x0 + cw < 60, x0 + cw - (x + bw - 1)), (y0 + ch < 60, y0 + ch - (y + bh - 1))):
            assert not inner or gap > 20

    # the same prompt in the full image and in a sub-crop: the sub-crop's masks win
    grids = [np.array([[1 / 6, 1 / 6]]), np.array([[0.25, 0.25]])]  # both at pixel (10, 10)
    both = _disc_generator(model, points_per_side=None, point_grids=grids, crop_n_layers=1).generate(img)
    assert [r["crop_box"] for r in both] == [[0, 0, 40, 40]] * 3
    assert [r["area"] for r in both] == [249, 9, 69]
    # crop_nms_thresh = 1: nothing suppressed across crops (IoU 1 is not > 1)
    kept = _disc_generator(model, points_per_side=None, point_grids=grids, crop_n_layers=1, crop_nms_thresh=1.0).generate(img)
    assert [r["crop_box"] for r in kept] == [[0, 0, 40, 40]] * 3 + [[0, 0, 60, 60]] * 3


def test_disc_masks_small_regions(model):
    img = np.full((40, 40, 3), 128, np.uint8)

    def hole_and_island(discs, px, py):  # on the r=9 disc: a 1-pixel hole and a 1-pixel island
        discs[2, int(py), int(px)] = -1.0
        discs[2, int(py), (int(px) + 14) % 40] = 1.0

    def area(r, px=10, py=10):
        return int((_disc_logits(40, 40, px, py, r) > 0).sum())

    raw = _disc_generator(model, edit=hole_and_island, points_per_side=2).generate(img)
    assert [r["area"] for r in raw[:4]] == [area(9.0)] * 4  # -1 pixel (hole) + 1 pixel (island)
    assert raw[0]["bbox"] == [2, 2, 22, 16] and not raw[0]["segmentation"][10, 10]

    recs = _disc_generator(model, edit=hole_and_island, points_per_side=2, min_mask_region_area=5).generate(img)
    # unchanged masks (NMS score 1) come first in their previous order, then the changed ones
    assert [r["area"] for r in recs] == [area(2.0)] * 4 + [area(5.0)] * 4 + [area(9.0)] * 4
    pts = [[10.0, 10.0], [30.0, 10.0], [10.0, 30.0], [30.0, 30.0]]
    for r, (px, py) in zip(recs[8:], pts):
        assert r["point_coords"] == [[px, py]]
        np.testing.assert_array_equal(r["segmentation"], _disc_logits(40, 40, px, py, 9.0) > 0)
        assert r["bbox"] == [int(px) - 8, int(py) - 8, 16, 16]
    # a minimum area below 1 pixel changes nothing
    same = _disc_generator(model, edit=hole_and_island, points_per_side=2, min_mask_region_area=1).generate(img)
    assert [r["area"] for r in same] == [r["area"] for r in raw] and same[0]["bbox"] == [2, 2, 22, 16]


# --------------------------------------------------------------------------- filters
def test_filters_really_filter(model, image, records):
    assert _gen(model, pred_iou_thresh=1.01).generate(image) == []
    assert _gen(model, stability_score_thresh=1.01).generate(image) == []
    # partial filtering on known values: test_disc_masks_known_answer


def test_box_nms_threshold_zero_leaves_disjoint_boxes(model, image, records):
    kept = _gen(model, box_nms_thresh=0.0).generate(image)
    assert 0 < len(kept) <= len(records)
    boxes = torch.tensor([[r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2], r["bbox"][1] + r["bbox"][3]] for r in kept], dtype=torch.float64)
    nonempty = [i for i, r in enumerate(kept) if r["area"] > 0]
    # every kept non-degenerate pair has zero overlap (in the inclusive-max XYXY frame)
    for a in nonempty:
        for b in nonempty:
            if a < b:
                ix = min(boxes[a, 2], boxes[b, 2]) - max(boxes[a, 0], boxes[b, 0])
                iy = min(boxes[a, 3], boxes[b, 3]) - max(boxes[a, 1], boxes[b, 1])
                assert ix <= 0 or iy <= 0


# --------------------------------------------------------------------------- NMS
def test_generate_with_crops(model, image):
    h, w = image.shape[:2]
    recs = _gen(model, crop_n_layers=1).generate(image)
    boxes, _ = generate_crop_boxes((h, w), 1, 512 / 1500)
    allowed = [[b[0], b[1], b[2] - b[0], b[3] - b[1]] for b in boxes]
    assert len(recs) > 0
    for r in recs:
        assert r["crop_box"] in allowed
        assert r["segmentation"].shape == (h, w)
        cx, cy, cw, ch = r["crop_box"]
        if r["area"]:  # a mask lies inside its crop, and its prompt too
            x, y, bw, bh = r["bbox"]
            assert cx <= x and cy <= y and x + bw <= cx + cw and y + bh <= cy + ch
            assert not r["segmentation"][:, : max(cx, 0)].any() and not r["segmentation"][: max(cy, 0)].any()
        px, py = r["point_coords"][0]
        assert cx <= px <= cx + cw and cy <= py <= cy + ch
    assert {tuple(r["crop_box"]) for r in recs} - {(0, 0, w, h)}, "expected masks from the sub-crops too"


# --------------------------------------------------------------------------- mask helpers
def test_min_mask_region_area(model, image):
    area = 30
    recs = _gen(model, min_mask_region_area=area).generate(image)
    assert len(recs) > 0
    from scipy import ndimage

    for r in recs:
        m = r["segmentation"]
        assert r["area"] == int(m.sum()) and r["bbox"] == mask_to_box_xywh(m)
        if m.any():
            lab, n = ndimage.label(m, structure=np.ones((3, 3)))
            sizes = np.bincount(lab.ravel())[1:]
            assert n == 1 or sizes.min() >= area


# --------------------------------------------------------------------------- odd inputs
def test_tiny_and_odd_images(model):
    one = _gen(model, points_per_side=2).generate(np.full((1, 1, 3), 100, np.uint8))
    assert len(one) > 0
    for r in one:
        assert r["segmentation"].shape == (1, 1) and r["area"] in (0, 1)
        (px, py), = r["point_coords"]
        assert px in (0.25, 0.75) and py in (0.25, 0.75) and r["crop_box"] == [0, 0, 1, 1]
    thin = _gen(model, points_per_side=3).generate(np.full((3, 500, 3), 50, np.uint8))
    assert len(thin) > 0 and all(r["segmentation"].shape == (3, 500) for r in thin)
    gray = np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (30, 1))
    g = _gen(model, points_per_side=3).generate(gray)
    rgb = _gen(model, points_per_side=3).generate(np.repeat(gray[..., None], 3, axis=2))
    assert len(g) == len(rgb) > 0
    for a, b in zip(g, rgb):
        np.testing.assert_array_equal(a["segmentation"], b["segmentation"])
    thin_crops = _gen(model, points_per_side=2, crop_n_layers=1).generate(np.full((3, 500, 3), 50, np.uint8))
    assert all(r["segmentation"].shape == (3, 500) for r in thin_crops)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(points_per_side=None), "exactly one of points_per_side and point_grids"),
        (dict(point_grids=[build_point_grid(2)]), "exactly one of points_per_side and point_grids"),
        (dict(points_per_side=0), "points_per_side must be >= 1"),
        (dict(points_per_side=2.5), "points_per_side must be an integer"),
        (dict(points_per_batch=0), "points_per_batch must be >= 1"),
        (dict(output_mode="png"), "output_mode must be one of"),
        (dict(box_nms_thresh=1.5), "box_nms_thresh must be <= 1"),
        (dict(crop_nms_thresh=-0.1), "crop_nms_thresh must be >= 0"),
        (dict(pred_iou_thresh=float("nan")), "pred_iou_thresh must be finite"),
        (dict(stability_score_thresh="high"), "stability_score_thresh must be a number"),
        (dict(stability_score_offset=-1.0), "stability_score_offset must be >= 0"),
        (dict(crop_n_layers=-1), "crop_n_layers must be >= 0"),
        (dict(crop_overlap_ratio=1.0), "crop_overlap_ratio must be < 1"),
        (dict(crop_n_points_downscale_factor=0), "crop_n_points_downscale_factor must be >= 1"),
        (dict(points_per_side=2, crop_n_layers=2, crop_n_points_downscale_factor=2), "leaves no points on crop layer 2"),
        (dict(min_mask_region_area=-5), "min_mask_region_area must be >= 0"),
        (dict(points_per_side=None, point_grids=[build_point_grid(2)] * 2), "one grid per crop layer"),
        (dict(points_per_side=None, point_grids=[np.array([[0.5, 1.5]])]), "must lie in [0, 1]"),
        (dict(points_per_side=None, point_grids=[np.zeros((3,))]), "(N, 2) array"),
    ],
)
def test_bad_parameters(model, kwargs, message):
    with pytest.raises(ValueError) as exc:
        SamAutomaticMaskGenerator(model, **kwargs)
    assert message in str(exc.value)


def test_explicit_point_grids_and_defaults(model, image):
    g = SamAutomaticMaskGenerator(model)
    assert (g.points_per_batch, g.pred_iou_thresh, g.stability_score_thresh, g.stability_score_offset) == (64, 0.88, 0.95, 1.0)
    assert (g.box_nms_thresh, g.crop_n_layers, g.crop_nms_thresh, g.crop_n_points_downscale_factor) == (0.7, 0, 0.7, 1)
    assert g.crop_overlap_ratio == 512 / 1500 and g.min_mask_region_area == 0 and g.output_mode == "binary_mask"
    assert len(g.point_grids) == 1 and g.point_grids[0].shape == (1024, 2)
    grid = np.array([[0.5, 0.5]])
    recs = _gen(model, points_per_side=None, point_grids=[grid]).generate(image)
    assert 1 <= len(recs) <= 3 and all(r["point_coords"] == [[32.0, 24.0]] for r in recs)


def test_bad_image_is_refused(model):
    from repvit_sam.io import ImageError

    with pytest.raises(ImageError):
        _gen(model).generate(np.zeros((4, 4, 2), np.uint8))
