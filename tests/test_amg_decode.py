"""The two decode strategies of segment-everything (inference/amg/decode.py) give the same records.

1. With the same synthetic decoder behind both (discs around each point, point-dependent
   scores), the fast pipeline (IoU filter before upscaling, chunking, order) gives exactly the
   reference's records.
2. End to end on random weights of every tiny variant, fast and reference records agree
   (count, IoU, scores).
"""

from __future__ import annotations


import numpy as np
import pytest
import torch

from repvit_sam import build_from_config
from repvit_sam.inference.amg import decode as amg_decode
from repvit_sam.inference.agreement import compare_records
from repvit_sam.inference.amg import SamAutomaticMaskGenerator
from repvit_sam.inference.amg.decode import FastDecode
from repvit_sam.inference.fast_decoder import TokenState

from conftest import TINY, randomize_


RADII = (2.0, 5.0, 9.0)  # in low-res (256-frame) pixels x 4 = input pixels


def _disc_lowres(centres: torch.Tensor, low: int, scale: float) -> torch.Tensor:
    """(B, 2) XY in the model-input frame -> (B, 3, low, low) logits: discs of radius r (input
    pixels) around each point, logits = 4 (r - distance): stability scores from ~0.88 (r=2)
    to ~0.97 (r=9), so the stability filter keeps some and drops others."""
    yy, xx = torch.meshgrid(torch.arange(low, dtype=torch.float32), torch.arange(low, dtype=torch.float32), indexing="ij")
    out = []
    for x, y in centres.tolist():
        d = torch.sqrt((xx - (x / scale - 0.5)) ** 2 + (yy - (y / scale - 0.5)) ** 2) * scale
        out.append(torch.stack([(r * scale - d) * 4 for r in RADII]))
    return torch.stack(out)


def _disc_scores(centres: torch.Tensor, size: int) -> torch.Tensor:
    """Point-dependent predicted IoUs for the 3 masks: some pass 0.88, some do not."""
    u = (centres[:, 0] / size) * 0.3 + (centres[:, 1] / size) * 0.2
    return torch.stack([0.75 + u, 0.8 + u * 0.5, 0.95 - u * 0.4], dim=1)


def _install_disc_decoder(gen: SamAutomaticMaskGenerator) -> None:
    m = gen.predictor.model
    pe, md = m.prompt_encoder, m.mask_decoder
    low = pe.mask_input_size[0]
    size = m.img_size
    scale = size / low

    def fake_prompt_encoder(points, boxes, masks):
        coords, _ = points
        sparse = torch.zeros(coords.shape[0], 2, md.transformer_dim)
        sparse[:, 0, :2] = coords[:, 0, :]
        dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(coords.shape[0], -1, *pe.image_embedding_size)
        return sparse, dense

    def fake_decoder(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, multimask_output):
        c = sparse_prompt_embeddings[:, 0, :2]
        return _disc_lowres(c, low, scale), _disc_scores(c, size)

    def fake_tokens(sparse, dense=None, mask_index=None):
        c = sparse[:, 0, :2]
        iou = torch.cat([torch.zeros(len(c), 1), _disc_scores(c, size)], dim=1)
        n = len(c)  # the point rides in ``factors``; the other fields only need a batch dimension
        return TokenState(factors=c.clone(), right=torch.zeros(n), scale=torch.zeros(n), base=torch.zeros(1),
                          mask_tokens=torch.zeros(n, 4, 1), iou_pred=iou, mask_index=(0, 1, 2, 3))

    def fake_masks(state, token_index=None, out=None):
        discs = torch.cat([torch.zeros(len(state), 1, low, low), _disc_lowres(state.factors, low, scale)], dim=1)
        return discs if token_index is None else discs[:, torch.as_tensor(token_index)]

    pe.forward = fake_prompt_encoder
    md.forward = fake_decoder
    if isinstance(gen.decode, FastDecode):
        gen.decode.decoder.tokens = fake_tokens
        gen.decode.decoder.masks = fake_masks


@pytest.fixture(scope="module", params=sorted(TINY))
def model(request):
    """A random-weight model of each tiny variant (tiny_repvit, tiny_vit_t, tiny_vit_b)."""
    torch.manual_seed(0)
    return randomize_(build_from_config(TINY[request.param]))


@pytest.fixture
def disc_model():
    torch.manual_seed(0)
    return randomize_(build_from_config(TINY["repvit"]))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(points_per_side=6),
        dict(points_per_side=5, pred_iou_thresh=0.0, stability_score_thresh=0.0, points_per_batch=7),
        dict(points_per_side=4, crop_n_layers=1, stability_score_thresh=0.5),
        dict(points_per_side=6, min_mask_region_area=30, box_nms_thresh=0.5, output_mode="coco_rle"),
    ],
)
def test_fast_pipeline_equals_reference_on_same_decoder(disc_model, kwargs):
    img = np.full((70, 90, 3), 100, np.uint8)
    recs = {}
    for impl in ("reference", "fast"):
        gen = SamAutomaticMaskGenerator(disc_model, impl=impl, **kwargs)
        _install_disc_decoder(gen)
        recs[impl] = gen.generate(img)
    ref, fast = recs["reference"], recs["fast"]
    assert len(ref) > 3
    assert len(fast) == len(ref)
    for a, b in zip(ref, fast):
        for k in ("area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"):
            assert a[k] == b[k], k
        if isinstance(a["segmentation"], np.ndarray):
            np.testing.assert_array_equal(a["segmentation"], b["segmentation"])
        else:
            assert a["segmentation"] == b["segmentation"]
    if kwargs.get("pred_iou_thresh", 0.88) > 0:  # the filter really removed some masks
        assert min(r["predicted_iou"] for r in ref) > 0.88


def test_fast_path_bounds_full_size_logits(disc_model, monkeypatch):
    """Full-size logits are made a few masks at a time, never for a whole batch."""
    monkeypatch.setattr(amg_decode, "FULLRES_CHUNK", 3)
    gen = SamAutomaticMaskGenerator(disc_model, points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    _install_disc_decoder(gen)
    sizes = []
    post = gen.predictor.model.postprocess_masks

    def spy(masks, input_size, original_size):
        sizes.append(masks.shape[1])
        return post(masks, input_size, original_size)

    monkeypatch.setattr(gen.predictor.model, "postprocess_masks", spy)
    recs = gen.generate(np.full((70, 90, 3), 100, np.uint8))
    assert recs and max(sizes) <= 3 and sum(sizes) == 6 * 6 * 3


def test_coarse_to_fine_skips_covered_points(disc_model):
    img = np.full((70, 90, 3), 100, np.uint8)
    full = SamAutomaticMaskGenerator(disc_model, points_per_side=8)
    _install_disc_decoder(full)
    c2f = SamAutomaticMaskGenerator(disc_model, points_per_side=8, sampling="coarse-to-fine", coarse_points_per_side=3)
    _install_disc_decoder(c2f)
    decoded = []
    tokens = c2f.decode.decoder.tokens
    c2f.decode.decoder.tokens = lambda sparse, dense=None, mask_index=None: decoded.append(sparse[:, 0, :2].clone()) or tokens(sparse, dense, mask_index)
    ref, recs = full.generate(img), c2f.generate(img)
    pts = torch.cat(decoded)
    assert 9 < len(pts) < 9 + 64  # the coarse grid, then only the uncovered fine points
    # every fine point that was skipped lies inside a mask found from the coarse grid
    assert len(recs) > 0
    agreement = compare_records(ref, recs)
    assert agreement["n_reference"] == len(ref) and 0 <= agreement["recall"] <= 1


def test_end_to_end_random_weights_fast_equals_reference(model):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(50, 70, 3), dtype=np.uint8)
    kw = dict(points_per_side=6, pred_iou_thresh=-10.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    ref = SamAutomaticMaskGenerator(model, impl="reference", **kw).generate(img)
    fast = SamAutomaticMaskGenerator(model, **kw).generate(img)
    assert len(ref) == len(fast) == 6 * 6 * 3  # nothing filtered: every mask of every point
    a = compare_records(ref, fast, min_iou=0.99)
    assert a["matched"] == len(ref)
    assert a["max_predicted_iou_diff"] < 1e-3 and a["max_stability_diff"] < 1e-3


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(impl="gpu"), "impl must be one of"),
        (dict(precision="fp16"), "precision must be one of"),
        (dict(sampling="random"), "sampling must be one of"),
        (dict(impl="reference", precision="bf16"), "plain algorithm"),
        (dict(sampling="coarse-to-fine", points_per_side=None, point_grids=[np.array([[0.5, 0.5]])]), "refines a regular grid"),
        (dict(sampling="coarse-to-fine", coarse_points_per_side=64), "coarse_points_per_side must be <= 32"),
        (dict(coarse_points_per_side=4), "applies to sampling='coarse-to-fine'"),
        (dict(backend="tpu"), "unknown backend"),
    ],
)
def test_fast_options_errors(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamAutomaticMaskGenerator(model, **kwargs)


def test_empty_result_both_paths(model):
    """Random weights at default thresholds: nothing passes the filters -> [] from both paths."""
    img = np.random.default_rng(5).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    for impl in ("reference", "fast"):
        gen = SamAutomaticMaskGenerator(model, points_per_side=4, impl=impl)
        assert gen.generate(img) == []
        # the filters are what emptied it: with them off, the same grid gives masks
        assert len(SamAutomaticMaskGenerator(model, points_per_side=4, impl=impl, pred_iou_thresh=-10.0, stability_score_thresh=0.0).generate(img)) > 0


@pytest.mark.parametrize("kwargs", [dict(impl="reference", points_per_batch=10), dict(), dict(sampling="coarse-to-fine", coarse_points_per_side=2)])
def test_progress_reports_every_grid_point_once(model, kwargs):
    seen = []
    gen = SamAutomaticMaskGenerator(model, points_per_side=5, crop_n_layers=1, **kwargs)
    gen.generate(np.full((40, 50, 3), 90, np.uint8), progress=lambda done, total: seen.append((done, total)))
    total = 25 * 5  # the whole image and 4 crops, 5 x 5 points each
    assert seen and all(t == total for _, t in seen)
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == total and done[0] > 0


# --------------------------------------------------------------------------- use_m2m (SAM 2's refinement)
def test_m2m_record_is_the_mask_decoded_again_with_its_own_logits(disc_model):
    """With use_m2m, each record is what the predictor gives for its point with that mask's own
    low-res logits as the mask prompt (single output): one point, filters off, three records."""
    from repvit_sam import SamPredictor

    torch.manual_seed(1)
    img = np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    kw = dict(points_per_side=1, pred_iou_thresh=-10.0, stability_score_thresh=0.0, box_nms_thresh=1.0, output_mode="uncompressed_rle")
    plain = SamAutomaticMaskGenerator(disc_model, impl="reference", **kw).generate(img)
    recs = SamAutomaticMaskGenerator(disc_model, impl="reference", use_m2m=True, **kw).generate(img)
    pred = SamPredictor(disc_model)
    pred.set_image(img)
    point = np.array([[32.0, 24.0]])
    assert [r["point_coords"] for r in recs] == [point.tolist()] * 3
    _, _, low = pred.predict(point_coords=point, point_labels=np.ones(1), multimask_output=True, return_logits=True)
    want = []
    for k in range(3):
        _, score, _ = pred.predict(point_coords=point, point_labels=np.ones(1), mask_input=low[k : k + 1], multimask_output=False)
        want.append(float(score[0]))
    np.testing.assert_allclose(sorted(r["predicted_iou"] for r in recs), sorted(want), atol=1e-5)
    # and not the plain masks' scores: the second pass changed them
    assert max(abs(a - b) for a, b in zip(sorted(r["predicted_iou"] for r in recs), sorted(r["predicted_iou"] for r in plain))) > 1e-3


def test_m2m_fast_equals_reference(model):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    kw = dict(points_per_side=5, pred_iou_thresh=-10.0, stability_score_thresh=0.0, box_nms_thresh=1.0, use_m2m=True)
    ref = SamAutomaticMaskGenerator(model, impl="reference", points_per_batch=7, **kw).generate(img)
    fast = SamAutomaticMaskGenerator(model, points_per_batch=7, **kw).generate(img)
    assert len(ref) == len(fast) == 5 * 5 * 3
    a = compare_records(ref, fast, min_iou=0.99)
    assert a["matched"] == len(ref)
    assert a["max_predicted_iou_diff"] < 1e-3 and a["max_stability_diff"] < 1e-3


def test_m2m_filters_on_the_refined_scores_in_both_paths(disc_model):
    """A predicted-IoU threshold in the widest gap between the refined scores keeps the same
    masks in both paths (the scores of random tiny_repvit weights are positive, where the filter
    applies)."""
    img = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    kw = dict(points_per_side=5, pred_iou_thresh=-10.0, stability_score_thresh=0.0, box_nms_thresh=1.0, use_m2m=True)
    ref = SamAutomaticMaskGenerator(disc_model, impl="reference", **kw).generate(img)
    scores = np.sort([r["predicted_iou"] for r in ref])
    assert scores[0] > 0
    k = int(np.argmax(np.diff(scores)))  # far from both paths' rounding (< 1e-5 apart)
    assert scores[k + 1] - scores[k] > 1e-4
    kw.update(pred_iou_thresh=float(scores[k] + scores[k + 1]) / 2)
    ref2 = SamAutomaticMaskGenerator(disc_model, impl="reference", **kw).generate(img)
    fast2 = SamAutomaticMaskGenerator(disc_model, **kw).generate(img)
    assert len(ref2) == len(ref) - k - 1 and len(fast2) == len(ref2)
    assert compare_records(ref2, fast2, min_iou=0.99)["matched"] == len(ref2)


def test_m2m_option_errors_and_flag(model):
    import argparse

    from repvit_sam import AmgOptions

    with pytest.raises(ValueError, match="use_m2m must be True or False, got 'yes'"):
        SamAutomaticMaskGenerator(model, use_m2m="yes")
    p = argparse.ArgumentParser()
    AmgOptions.add_arguments(p)
    assert AmgOptions.from_namespace(p.parse_args(["--use-m2m"])).use_m2m is True
    assert AmgOptions.from_namespace(p.parse_args([])).use_m2m is False
