"""SamPredictor: segment_anything's API, conventions and arithmetic, on tiny random models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from repvit_sam import ResizeLongestSide, SamPredictor


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(150, 200, 3), dtype=np.uint8)


def test_get_preprocess_shape_rounds_half_up():
    assert ResizeLongestSide.get_preprocess_shape(769, 770, 1024) == (1023, 1024)
    assert ResizeLongestSide.get_preprocess_shape(600, 800, 1024) == (768, 1024)
    assert ResizeLongestSide.get_preprocess_shape(3, 2000, 1024) == (2, 1024)


def test_apply_image_is_pil_bilinear(image):
    t = ResizeLongestSide(256)
    out = t.apply_image(image)
    assert out.shape == (192, 256, 3) and out.dtype == np.uint8
    expected = np.array(Image.fromarray(image).resize((256, 192), Image.BILINEAR))
    np.testing.assert_array_equal(out, expected)


def test_coords_and_boxes_numpy_and_torch_agree():
    t = ResizeLongestSide(1024)
    size = (600, 800)  # -> (768, 1024): scale 1.28 on both axes
    coords = np.array([[100.0, 50.0], [799.0, 599.0]])
    np.testing.assert_allclose(t.apply_coords(coords, size), coords * 1.28)
    boxes = np.array([[10, 20, 30, 40]])
    np.testing.assert_allclose(t.apply_boxes(boxes, size), [[12.8, 25.6, 38.4, 51.2]])
    assert t.apply_coords(coords, size) is not coords and coords[0, 0] == 100.0  # input untouched
    bt = t.apply_boxes_torch(torch.tensor(boxes), size)
    assert bt.dtype == torch.float32
    np.testing.assert_allclose(bt.numpy(), [[12.8, 25.6, 38.4, 51.2]], rtol=1e-6)
    np.testing.assert_allclose(t.apply_coords_torch(torch.tensor(coords), size).numpy(), coords * 1.28, rtol=1e-6)


def test_predict_before_set_image_raises(tiny_model):
    p = SamPredictor(tiny_model)
    with pytest.raises(RuntimeError, match=r"set_image\(\.\.\.\) before predict"):
        p.predict(point_coords=np.array([[1.0, 1.0]]), point_labels=np.array([1]))
    with pytest.raises(RuntimeError, match="before get_image_embedding"):
        p.get_image_embedding()


def test_predict_shapes_and_logit_threshold(tiny_model, image):
    p = SamPredictor(tiny_model)
    p.set_image(image)
    assert p.original_size == (150, 200) and p.input_size == (192, 256)
    emb = p.get_image_embedding()
    assert emb.shape == (1, 32, 16, 16)
    masks, scores, low = p.predict(point_coords=np.array([[50, 60]]), point_labels=np.array([1]))
    assert masks.shape == (3, 150, 200) and masks.dtype == bool
    assert scores.shape == (3,) and low.shape == (3, 64, 64)
    logits, scores2, _ = p.predict(point_coords=np.array([[50, 60]]), point_labels=np.array([1]), return_logits=True)
    np.testing.assert_array_equal(logits > 0.0, masks)
    np.testing.assert_array_equal(scores, scores2)
    single, s1, low1 = p.predict(box=np.array([10, 10, 120, 100]), multimask_output=False)
    assert single.shape == (1, 150, 200) and s1.shape == (1,)
    # mask_input refinement loop: feed back the low-res logits
    refined, _, _ = p.predict(point_coords=np.array([[50, 60]]), point_labels=np.array([1]), mask_input=low1, multimask_output=False)
    assert refined.shape == (1, 150, 200)


def test_predict_equals_predict_torch_with_transformed_prompts(tiny_model, image):
    p = SamPredictor(tiny_model)
    p.set_image(image)
    pts, lbl, box = np.array([[50.0, 60.0], [150.0, 20.0]]), np.array([1, 0]), np.array([10, 10, 120, 100])
    m_np, s_np, l_np = p.predict(pts, lbl, box, multimask_output=True, return_logits=True)
    ct = torch.as_tensor(p.transform.apply_coords(pts, p.original_size), dtype=torch.float)[None]
    bt = p.transform.apply_boxes_torch(torch.as_tensor(box), p.original_size)
    m_t, s_t, l_t = p.predict_torch(ct, torch.as_tensor(lbl)[None], bt, multimask_output=True, return_logits=True)
    # numpy scales the box in float64, torch in float32: equal up to float32 rounding
    np.testing.assert_allclose(m_np, m_t[0].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s_np, s_t[0].numpy(), rtol=1e-5, atol=1e-6)


def test_many_boxes_in_one_predict_torch_call_match_one_by_one(tiny_model, image):
    p = SamPredictor(tiny_model)
    p.set_image(image)
    boxes = torch.tensor([[10, 10, 120, 100], [50, 20, 190, 140], [0, 0, 199, 149]])
    tb = p.transform.apply_boxes_torch(boxes, p.original_size)
    masks, scores, _ = p.predict_torch(None, None, boxes=tb, multimask_output=False, return_logits=True)
    assert masks.shape == (3, 1, 150, 200)
    for i in range(3):
        mi, si, _ = p.predict(box=boxes[i].numpy(), multimask_output=False, return_logits=True)
        torch.testing.assert_close(masks[i], torch.from_numpy(mi), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(scores[i], torch.from_numpy(si), rtol=1e-4, atol=1e-5)


def test_bgr_input_equals_rgb(tiny_model, image):
    p = SamPredictor(tiny_model)
    p.set_image(image)
    rgb = p.get_image_embedding().clone()
    p.set_image(image[..., ::-1].copy(), image_format="BGR")
    torch.testing.assert_close(p.get_image_embedding(), rgb)


def test_reset_image_and_bad_images(tiny_model, image):
    p = SamPredictor(tiny_model)
    p.set_image(image)
    p.reset_image()
    assert not p.is_image_set and p.features is None
    # grayscale / RGBA / 16-bit / float in [0, 1] are converted (tests/test_io.py); others refused
    with pytest.raises(ValueError, match=r"C = 1, 3 \(RGB\) or 4 \(RGBA\); got array of shape \(150, 200, 2\)"):
        p.set_image(image[..., :2])
    with pytest.raises(ValueError, match=r"float images must lie in \[0, 1\]"):
        p.set_image(image.astype(np.float32))
    with pytest.raises(ValueError, match="unsupported dtype"):
        p.set_image(image.astype(np.int32))
    with pytest.raises(ValueError, match="RGB' or 'BGR"):
        p.set_image(image, image_format="HSV")
    with pytest.raises(ValueError, match="long side 256"):
        p.set_torch_image(torch.zeros(1, 3, 100, 100), (100, 100))


def test_sam_forward_matches_predictor(tiny_model, image):
    """segment_anything's batched Sam.forward gives the predictor's answer."""
    p = SamPredictor(tiny_model)
    p.set_image(image)
    pts = np.array([[50.0, 60.0]])
    m_np, s_np, _ = p.predict(pts, np.array([1]), multimask_output=True)
    t = p.transform
    img = torch.as_tensor(t.apply_image(image)).permute(2, 0, 1).float()
    out = tiny_model([{"image": img, "original_size": (150, 200),
                       "point_coords": torch.as_tensor(t.apply_coords(pts, (150, 200)), dtype=torch.float)[None],
                       "point_labels": torch.tensor([[1]])}], multimask_output=True)
    assert out[0]["masks"].shape == (1, 3, 150, 200)
    torch.testing.assert_close(out[0]["iou_predictions"][0], torch.from_numpy(s_np), rtol=1e-4, atol=1e-5)
    assert (out[0]["masks"][0].numpy() != m_np).mean() < 1e-3


@pytest.mark.parametrize("input_size,original_size", [
    ((576, 1024), (480, 854)),  # landscape: only 145 of the 256 low-res rows are upsampled
    ((1024, 768), (1000, 750)),  # portrait
    ((1024, 1024), (1024, 1024)),  # nothing cropped
    ((1021, 1024), (3000, 3008)),  # the crop ends just short of the last cell
    ((4, 1024), (1, 256)),
    ((577, 1024), (577, 1024)),
])
def test_postprocess_masks_upsamples_only_what_the_crop_keeps(input_size, original_size):
    """Sam.postprocess_masks upsamples only the low-res cells inside the crop (plus one): the
    result is bit for bit the full upsample-crop-resize of the original code."""
    from torch.nn import functional as F

    from repvit_sam import build_sam

    model = build_sam("vit_t")
    low = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(sum(input_size))) * 10
    full = F.interpolate(low, (1024, 1024), mode="bilinear", align_corners=False)[..., : input_size[0], : input_size[1]]
    if tuple(full.shape[-2:]) != original_size:
        full = F.interpolate(full, original_size, mode="bilinear", align_corners=False)
    got = model.postprocess_masks(low, input_size, original_size)
    assert got.shape == (2, 3, *original_size)
    assert torch.equal(got, full)
