"""Predictor features beyond segment_anything: prompt checks, many boxes, image batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repvit_sam import SamPredictor
from repvit_sam.inference.prompts import PromptError


@pytest.fixture
def image():
    return np.random.default_rng(1).integers(0, 256, size=(120, 180, 3), dtype=np.uint8)


@pytest.fixture
def predictor(image):
    from repvit_sam import build_from_config

    from conftest import TINY, randomize_

    p = SamPredictor(randomize_(build_from_config(TINY["repvit"])))
    p.set_image(image)
    return p


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(point_coords=np.array([[10, 10]])), "point_labels must be given"),
        (dict(point_coords=np.array([10, 10, 3]), point_labels=np.array([1])), r"shape \(N, 2\)"),
        (dict(point_coords=np.zeros((0, 2)), point_labels=np.zeros(0)), "point_coords is empty"),
        (dict(point_coords=np.array([[10, 10]]), point_labels=np.array([2])), r"1 \(foreground\), 0 \(background\) or -1.*\[2.0\]"),
        (dict(point_coords=np.array([[10, 10]]), point_labels=np.array([0.5])), "got \\[0.5\\]"),
        (dict(point_coords=np.array([[10, 10], [5, 5]]), point_labels=np.array([1])), r"shape \(2,\)"),
        (dict(point_coords=np.array([[np.nan, 10]]), point_labels=np.array([1])), "NaN or infinite"),
        (dict(point_coords=np.array([[181, 10]]), point_labels=np.array([1])), r"outside the 180x120 image \(first: \[181, 10\]\)"),
        (dict(point_coords=np.array([[10, -1]]), point_labels=np.array([1])), "outside the 180x120 image"),
        (dict(point_coords=np.array([["a", "b"]]), point_labels=np.array([1])), "must be numeric"),
        (dict(box=np.array([10, 10, 5, 50])), "x0 <= x1"),
        (dict(box=np.array([10, 10, 50])), r"shape \(4,\) or \(B, 4\)"),
        (dict(box=np.array([0, 0, 200, 100])), "outside the 180x120 image"),
        (dict(box=np.zeros((0, 4))), "box is empty"),
        (dict(box=np.array([0, 0, 50, 50]), mask_input=np.zeros((256, 256))), r"mask_input must be low-res logits of shape \(1, 64, 64\)"),
        (dict(), "no prompt given"),
        (dict(point_labels=np.array([1])), "point_labels given without point_coords"),
    ],
)
def test_bad_prompts_give_clear_errors(predictor, kwargs, match):
    with pytest.raises(PromptError, match=match):
        predictor.predict(**kwargs)


def test_points_on_the_border_are_accepted_and_map_to_the_frame_edges(predictor):
    """(0, 0) and (W, H) are inside the image (inclusive bounds) and land on the corners of the
    resized frame: the same masks as those corners given to predict_torch directly."""
    masks, scores, low = predictor.predict(np.array([[0, 0], [180, 120]]), np.array([1, -1]))
    h, w = predictor.input_size
    coords = torch.tensor([[[0.0, 0.0], [float(w), float(h)]]])
    ref_masks, ref_scores, ref_low = predictor.predict_torch(coords, torch.tensor([[1, -1]]))
    np.testing.assert_array_equal(masks, ref_masks[0].numpy())
    np.testing.assert_allclose(scores, ref_scores[0].numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(low, ref_low[0].numpy(), rtol=0, atol=1e-5)


def test_many_boxes_equal_one_by_one_and_points_apply_to_each(predictor):
    boxes = np.array([[10, 10, 100, 90], [50, 20, 170, 110], [0, 0, 180, 120]] * 7)  # 21 boxes: > one chunk
    pts, lbl = np.array([[60.0, 50.0]]), np.array([1])
    masks, scores, low = predictor.predict(pts, lbl, box=boxes, multimask_output=False, return_logits=True)
    assert masks.shape == (21, 1, 120, 180) and scores.shape == (21, 1) and low.shape == (21, 1, 64, 64)
    for i in (0, 1, 2, 20):
        mi, si, _ = predictor.predict(pts, lbl, box=boxes[i], multimask_output=False, return_logits=True)
        np.testing.assert_allclose(masks[i], mi, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(scores[i], si, rtol=1e-4, atol=1e-5)


def test_image_batch_equals_single_images(image):
    from repvit_sam import build_from_config

    from conftest import TINY, randomize_

    p = SamPredictor(randomize_(build_from_config(TINY["vit_t"])))
    other = np.random.default_rng(2).integers(0, 256, size=(90, 60, 3), dtype=np.uint8)
    p.set_image_batch([image, other])
    batch = p.predict_batch(point_coords=[np.array([[20, 30]]), np.array([[5, 80]])], point_labels=[np.array([1]), np.array([1])])
    assert batch[0][0].shape == (3, 120, 180) and batch[1][0].shape == (3, 90, 60)
    for img, pts, (m, s, _) in ((image, [[20, 30]], batch[0]), (other, [[5, 80]], batch[1])):
        p.set_image(img)
        m1, s1, _ = p.predict(np.array(pts), np.array([1]))
        np.testing.assert_allclose(s, s1, rtol=1e-4, atol=1e-5)
        assert (m != m1).mean() < 1e-3
    with pytest.raises(RuntimeError, match=r"set_image_batch\(\.\.\.\) before predict_batch"):
        p.predict_batch(box=[None, None])


def test_predict_batch_argument_count_is_checked(image):
    from repvit_sam import build_from_config

    from conftest import TINY, randomize_

    p = SamPredictor(randomize_(build_from_config(TINY["repvit"])))
    p.set_image_batch([image, image])
    with pytest.raises(PromptError, match=r"one entry per image \(2\), got 1"):
        p.predict_batch(box=[np.array([0, 0, 10, 10])])


def test_grayscale_input_equals_replicated_rgb(predictor, image):
    predictor.set_image(image[..., 0])
    emb_gray = predictor.get_image_embedding().clone()
    predictor.set_image(np.repeat(image[..., :1], 3, axis=2))
    torch.testing.assert_close(predictor.get_image_embedding(), emb_gray)


def test_backend_option_matches_plain_encoder(predictor, image):
    """backend='fused' gives the plain encoder's embedding (within fusion round-off);
    an unknown backend is refused by name."""
    from repvit_sam.backends import BackendError

    fast = SamPredictor(predictor.model, backend="fused-cl")
    fast.set_image(image)
    a, b = predictor.get_image_embedding(), fast.get_image_embedding()
    assert float((a - b).norm() / a.norm()) < 1e-5
    with pytest.raises(BackendError, match="unknown backend 'nope'"):
        SamPredictor(predictor.model, backend="nope")


def test_fast_decoder_predictions_equal_module_decoder(predictor, image):
    """SamPredictor's default fast decoder and the model's MaskDecoder give the same answers
    for points, boxes and mask prompts (up to float rounding)."""
    plain = SamPredictor(predictor.model, fast_decoder=False)
    plain.set_image(image)
    pts, lbl = np.array([[30.0, 40.0], [100.0, 20.0]]), np.array([1, 0])
    boxes = np.array([[10, 10, 90, 70], [50, 30, 170, 110]], dtype=float)
    for kwargs in (
        dict(point_coords=pts, point_labels=lbl),
        dict(box=boxes, multimask_output=False),
        dict(point_coords=pts, point_labels=lbl, mask_input=np.random.default_rng(2).normal(size=(1, 64, 64)).astype(np.float32)),
    ):
        a_masks, a_iou, a_low = plain.predict(**kwargs, return_logits=True)
        b_masks, b_iou, b_low = predictor.predict(**kwargs, return_logits=True)
        assert np.linalg.norm(a_low - b_low) / np.linalg.norm(a_low) < 1e-5
        np.testing.assert_allclose(a_iou, b_iou, atol=1e-5)
        assert np.linalg.norm(a_masks - b_masks) / np.linalg.norm(a_masks) < 1e-5
    assert predictor._fast_cache and not plain._fast_cache  # really two different code paths
