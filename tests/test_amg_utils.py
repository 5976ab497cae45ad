"""inference/amg/utils.py: box NMS, point grids, crop boxes.
"""

from __future__ import annotations

import numpy as np
import torch

from repvit_sam.inference.amg.utils import batched_nms, build_all_layer_point_grids, build_point_grid, generate_crop_boxes, nms



def test_nms_known_answer():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 5]], dtype=torch.float)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # IoU(0,1) = 81/119 = 0.68; IoU(0,3) = 50/100 = 0.5; IoU(1,3) = 36/114 = 0.32.
    assert nms(boxes, scores, 0.5).tolist() == [3, 0, 2]  # 0 is not suppressed: 0.5 is not > 0.5
    assert nms(boxes, scores, 0.49).tolist() == [3, 1, 2]
    assert nms(boxes, scores, 0.7).tolist() == [3, 0, 1, 2]
    assert nms(boxes, scores, 0.3).tolist() == [3, 2]
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []


def test_nms_ties_by_index_and_degenerate_boxes():
    boxes = torch.tensor([[0, 0, 4, 4], [0, 0, 4, 4], [0, 0, 4, 4]], dtype=torch.float)
    assert nms(boxes, torch.tensor([0.5, 0.5, 0.5]), 0.5).tolist() == [0]
    assert nms(boxes, torch.tensor([0.5, 0.7, 0.7]), 0.5).tolist() == [1]
    # zero-area boxes: IoU is 0/0, they never suppress each other
    zero = torch.zeros(3, 4)
    assert nms(zero, torch.tensor([0.1, 0.3, 0.2]), 0.5).tolist() == [1, 2, 0]


def test_batched_nms_per_category():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], dtype=torch.float)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 0, 1]), 0.5).tolist() == [0, 1, 3]
    assert batched_nms(boxes, scores, torch.zeros(4), 0.5).tolist() == [0, 3]


# --------------------------------------------------------------------------- grids, crops
def test_point_grid_values():
    np.testing.assert_allclose(build_point_grid(1), [[0.5, 0.5]])
    np.testing.assert_allclose(build_point_grid(2), [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    g = build_point_grid(4)
    assert g.shape == (16, 2)
    np.testing.assert_allclose(g[:4], [[0.125, 0.125], [0.375, 0.125], [0.625, 0.125], [0.875, 0.125]])
    np.testing.assert_allclose(g[4], [0.125, 0.375])
    grids = build_all_layer_point_grids(8, 2, 2)
    assert [len(x) for x in grids] == [64, 16, 4]
    np.testing.assert_allclose(grids[2], build_point_grid(2))


def test_crop_boxes_one_layer_100x200():
    boxes, layers = generate_crop_boxes((100, 200), 1, 512 / 1500)
    # overlap = int(0.3413 * 100 * 1) = 34; crop_w = ceil((34 + 200) / 2) = 117;
    # crop_h = ceil((34 + 100) / 2) = 67; x0 in {0, 83}, y0 in {0, 33}.
    assert boxes == [[0, 0, 200, 100], [0, 0, 117, 67], [0, 33, 117, 100], [83, 0, 200, 67], [83, 33, 200, 100]]
    assert layers == [0, 1, 1, 1, 1]
    boxes0, layers0 = generate_crop_boxes((100, 200), 0, 0.5)
    assert boxes0 == [[0, 0, 200, 100]] and layers0 == [0]
    boxes2, layers2 = generate_crop_boxes((100, 200), 2, 512 / 1500)
    assert len(boxes2) == 1 + 4 + 16 and layers2.count(2) == 16
