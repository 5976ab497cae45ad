"""repvit_sam.visualize: mask PNGs, overlays of masks/points/boxes, colour palette."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from repvit_sam.io import save_png_atomic
from repvit_sam.visualize import (
    BOX_COLOR,
    NEGATIVE_COLOR,
    POINT_BORDER_COLOR,
    POSITIVE_COLOR,
    mask_to_png,
    overlay,
    random_colors,
)


def _image(h: int = 120, w: int = 160) -> np.ndarray:
    """Mid-grey with a little texture: far from every palette colour and marker colour."""
    rng = np.random.default_rng(0)
    return (100 + rng.integers(0, 40, (h, w, 3))).astype(np.uint8)


def _disk(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return (y - cy) ** 2 + (x - cx) ** 2 <= r**2


def test_mask_to_png(tmp_path: Path) -> None:
    mask = np.array([[True, False, True], [False, False, True]])
    png = mask_to_png(mask)
    assert png.mode == "L" and png.size == (3, 2)
    np.testing.assert_array_equal(np.asarray(png), np.where(mask, 255, 0))
    np.testing.assert_array_equal(np.asarray(mask_to_png(mask.astype(np.uint8))), np.where(mask, 255, 0))
    save_png_atomic(png, tmp_path / "m.png")
    with Image.open(tmp_path / "m.png") as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im) > 0, mask)
    with pytest.raises(ValueError, match="threshold"):
        mask_to_png(mask.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        mask_to_png(mask[None])


def test_random_colors_deterministic_and_distinct() -> None:
    a = random_colors(12)
    assert a.shape == (12, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, random_colors(12))
    np.testing.assert_array_equal(a[:5], random_colors(5))  # prefix-stable
    assert not np.array_equal(a, random_colors(12, seed=1))
    assert len({tuple(c) for c in a}) == 12
    # Pairwise distances: no two colours nearly the same.
    d = np.abs(a[:, None].astype(int) - a[None].astype(int)).sum(-1)
    assert d[~np.eye(12, dtype=bool)].min() > 30
    assert random_colors(0).shape == (0, 3)


def test_overlay_masks_only_changes_mask_pixels() -> None:
    image = _image()
    original = image.copy()
    m1 = _disk(120, 160, 40, 50, 25)
    m2 = np.zeros((120, 160), bool)
    m2[70:110, 90:150] = True
    out = overlay(image, [m1, m2])
    np.testing.assert_array_equal(image, original)  # input untouched
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (160, 120)
    arr = np.asarray(out)
    outside = ~(m1 | m2)
    np.testing.assert_array_equal(arr[outside], image[outside])
    assert np.all(np.any(arr[m1] != image[m1], axis=-1))
    assert np.all(np.any(arr[m2] != image[m2], axis=-1))
    # Interior: the exact blend; boundary: the solid colour.
    colors = random_colors(2)
    expected = np.floor(image[75, 120].astype(np.float32) * 0.5 + colors[1] * 0.5 + 0.5)
    np.testing.assert_array_equal(arr[75, 120], expected.astype(np.uint8))
    np.testing.assert_array_equal(arr[70, 120], colors[1])  # top edge of the rectangle
    np.testing.assert_array_equal(arr[40, 50 - 25], colors[0])  # leftmost pixel of the disk
    # Deterministic.
    np.testing.assert_array_equal(arr, np.asarray(overlay(image, [m1, m2])))
    # Distinct colours per mask.
    assert not np.array_equal(arr[75, 120], arr[40, 50])


def test_overlay_custom_colors_alpha_and_array_masks() -> None:
    image = _image(30, 40)
    mask = np.zeros((30, 40), bool)
    mask[5:25, 5:35] = True
    stacked = np.stack([mask, np.zeros_like(mask)])  # (N, H, W) as SamPredictor.predict returns
    out = np.asarray(overlay(image, stacked, colors=[(255, 0, 0), (0, 0, 255)], alpha=1.0))
    np.testing.assert_array_equal(out[mask], np.broadcast_to([255, 0, 0], (mask.sum(), 3)))
    np.testing.assert_array_equal(out[~mask], image[~mask])
    out0 = np.asarray(overlay(image, mask, alpha=0.0, colors=[(255, 0, 0)]))  # single (H, W) mask
    interior = np.zeros_like(mask)
    interior[8:22, 8:32] = True
    np.testing.assert_array_equal(out0[interior], image[interior])  # alpha 0: only the outline shows
    np.testing.assert_array_equal(out0[5, 20], [255, 0, 0])
    np.testing.assert_array_equal(np.asarray(overlay(image, [])), image)


def test_overlay_points_and_boxes() -> None:
    image = _image(200, 300)
    points = np.array([[60, 50], [220, 150]])
    labels = np.array([1, 0])
    boxes = np.array([[150, 20, 280, 90]])
    out = np.asarray(overlay(image, [], points=points, labels=labels, boxes=boxes))
    np.testing.assert_array_equal(out[50, 60], POSITIVE_COLOR)  # centre of the positive point
    np.testing.assert_array_equal(out[150, 220], NEGATIVE_COLOR)
    radius = max(3, round(300 * 0.012))
    assert radius == 4
    # White border: the ring at the radius.
    np.testing.assert_array_equal(out[50, 60 + radius], POINT_BORDER_COLOR)
    np.testing.assert_array_equal(out[20, 200], BOX_COLOR)  # top edge of the box
    np.testing.assert_array_equal(out[55, 150], BOX_COLOR)  # left edge
    np.testing.assert_array_equal(out[55, 215], image[55, 215])  # box interior untouched
    # Everything away from the markers is unchanged.
    touched = np.zeros((200, 300), bool)
    for x, y in points:
        touched |= _disk(200, 300, y, x, radius + 1.5)
    x0, y0, x1, y1 = boxes[0]
    band = 2 + max(2, round(300 / 250))
    frame = np.zeros_like(touched)
    frame[y0 - band : y1 + band, x0 - band : x1 + band] = True
    frame[y0 + band : y1 - band, x0 + band : x1 - band] = False
    touched |= frame
    np.testing.assert_array_equal(out[~touched], image[~touched])
    assert np.any(out[touched] != image[touched])


def test_overlay_marker_size_scales_with_image() -> None:
    def marker_width(side: int) -> int:
        image = _image(side, side)
        out = np.asarray(overlay(image, [], points=np.array([[side // 2, side // 2]])))
        columns = np.flatnonzero(np.any(out != image, axis=(0, 2)))
        return int(columns[-1] - columns[0] + 1)

    small, large = marker_width(500), marker_width(2000)
    assert small >= 7  # visible even on small images
    assert 3.5 * small <= large <= 4.5 * small  # 4x the image side: about 4x the marker


def test_overlay_labels_default_and_padding() -> None:
    image = _image(100, 100)
    out = np.asarray(overlay(image, [], points=[[30, 30], [70, 70]]))  # no labels: foreground
    np.testing.assert_array_equal(out[30, 30], POSITIVE_COLOR)
    np.testing.assert_array_equal(out[70, 70], POSITIVE_COLOR)
    out = np.asarray(overlay(image, [], points=[[30, 30], [70, 70]], labels=[0, -1]))
    np.testing.assert_array_equal(out[30, 30], NEGATIVE_COLOR)
    np.testing.assert_array_equal(out[70, 70], image[70, 70])  # -1 is padding: not drawn


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"masks": [np.zeros((5, 5), bool)]}, r"masks\[0\] has shape \(5, 5\) but the image is \(10, 12\)"),
        ({"masks": [np.zeros((10, 12), np.float32)]}, "threshold"),
        ({"masks": [], "alpha": 1.5}, "alpha"),
        ({"masks": [np.ones((10, 12), bool)] * 2, "colors": [(1, 2, 3)]}, "at least 2 RGB triples"),
        ({"masks": [], "points": [[1, 2, 3]]}, r"points must have shape \(N, 2\)"),
        ({"masks": [], "points": [[1, 2]], "labels": [1, 0]}, "2 entries for 1 points"),
        ({"masks": [], "points": [[1, 2]], "labels": [2]}, "labels must be 1"),
        ({"masks": [], "points": [[np.nan, 2]]}, "NaN"),
        ({"masks": [], "boxes": [[1, 2, 3]]}, r"boxes must have shape \(N, 4\)"),
    ],
)
def test_overlay_bad_inputs(kwargs: dict, pattern: str) -> None:
    masks = kwargs.pop("masks")
    with pytest.raises(ValueError, match=pattern):
        overlay(_image(10, 12), masks, **kwargs)
