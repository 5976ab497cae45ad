"""inference/masks.py: pure mask functions (stability score, RLE, boxes, small regions).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repvit_sam.inference.amg.utils import is_box_near_crop_edge
from repvit_sam.inference.masks import (
    area_from_rle,
    batched_mask_to_box,
    calculate_stability_score,
    coco_encode_rle,
    masks_to_uncompressed_rle,
    remove_small_regions,
    rle_to_mask,
    uncompressed_rle_to_mask,
)



def test_stability_score_hand_made():
    logits = torch.tensor([[[-2.0, -0.5, 0.5], [1.5, 2.5, 0.0]]])
    # > 1: {1.5, 2.5} -> 2; > -1: {-0.5, 0.5, 1.5, 2.5, 0.0} -> 5
    assert calculate_stability_score(logits, 0.0, 1.0).tolist() == [pytest.approx(0.4)]
    # offset 0: (> 0) / (> 0) = 1; threshold 1, offset 0.5: {2.5} / {1.5, 2.5}
    assert calculate_stability_score(logits, 0.0, 0.0).tolist() == [1.0]
    assert calculate_stability_score(logits, 1.0, 0.5).tolist() == [0.5]
    # nothing above the loose threshold: 0, not NaN
    assert calculate_stability_score(torch.full((2, 3, 3), -5.0), 0.0, 1.0).tolist() == [0.0, 0.0]


def test_uncompressed_rle_round_trip():
    m = np.array([[1, 0, 0], [1, 1, 0]], dtype=bool)
    (rle,) = masks_to_uncompressed_rle(torch.as_tensor(m)[None])
    # column-major: [1, 1, 0, 1, 0, 0] -> starts with a zero-length run of 0s
    assert rle == {"size": [2, 3], "counts": [0, 2, 1, 1, 2]}
    np.testing.assert_array_equal(uncompressed_rle_to_mask(rle), m)
    assert area_from_rle(rle) == 3
    np.testing.assert_array_equal(rle_to_mask(coco_encode_rle(rle)), m)
    empty, full = masks_to_uncompressed_rle(torch.stack([torch.zeros(2, 3, dtype=torch.bool), torch.ones(2, 3, dtype=torch.bool)]))
    assert empty["counts"] == [6] and full["counts"] == [0, 6]
    rng = np.random.default_rng(1)
    rand = rng.random((5, 7, 9)) > 0.5
    for m2, r2 in zip(rand, masks_to_uncompressed_rle(torch.as_tensor(rand))):
        np.testing.assert_array_equal(uncompressed_rle_to_mask(r2), m2)


def test_batched_mask_to_box_and_crop_edge():
    masks = torch.zeros(3, 6, 8, dtype=torch.bool)
    masks[0, 1:3, 2:5] = True
    masks[1, 5, 7] = True
    assert batched_mask_to_box(masks).tolist() == [[2, 1, 4, 2], [7, 5, 7, 5], [0, 0, 0, 0]]
    boxes = torch.tensor([[30, 30, 60, 60], [5, 5, 95, 20], [0, 0, 50, 50], [40, 40, 99, 99]])
    # crop [100, 0, 200, 100] of a 300x100 image: left crop edge x=100 is inside the image
    near = is_box_near_crop_edge(boxes, [100, 0, 200, 100], [0, 0, 300, 100])
    assert near.tolist() == [False, True, True, True]
    near_full = is_box_near_crop_edge(boxes, [0, 0, 100, 100], [0, 0, 100, 100])
    assert near_full.tolist() == [False, False, False, False]


def test_remove_small_regions():
    m = np.zeros((10, 10), dtype=bool)
    m[1:8, 1:8] = True
    m[4, 4] = False  # a 1-pixel hole
    m[9, 9] = True  # a 1-pixel island
    filled, changed = remove_small_regions(m, 3, "holes")
    assert changed and filled[4, 4] and filled.sum() == m.sum() + 1
    cleaned, changed = remove_small_regions(filled, 3, "islands")
    assert changed and not cleaned[9, 9] and cleaned.sum() == 49
    same, changed = remove_small_regions(cleaned, 3, "islands")
    assert not changed and (same == cleaned).all()
    # all islands small: the largest is kept
    two = np.zeros((6, 6), dtype=bool)
    two[0, 0] = True
    two[3:5, 3:5] = True
    kept, changed = remove_small_regions(two, 100, "islands")
    assert changed and kept.sum() == 4 and kept[3:5, 3:5].all()
