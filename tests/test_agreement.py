"""inference/agreement.py: matching two sets of mask records by IoU.
"""

from __future__ import annotations


import numpy as np
import pytest

from repvit_sam.inference.agreement import compare_records



def test_compare_records_known_answer():
    m1 = np.zeros((10, 10), bool)
    m1[:5] = True  # 50 px
    m2 = np.zeros((10, 10), bool)
    m2[:4] = True  # 40 px, IoU with m1 = 0.8
    empty = np.zeros((10, 10), bool)
    rec = lambda m, s: {"segmentation": m, "predicted_iou": s, "stability_score": 1.0}  # noqa: E731
    a = compare_records([rec(m1, 0.9), rec(empty, 0.5)], [rec(m2, 0.95), rec(empty, 0.5)])
    assert a["matched"] == 2 and a["min_iou"] == pytest.approx(0.8) and a["matched_iou_ge_0_99"] == 1
    assert a["max_predicted_iou_diff"] == pytest.approx(0.05)
    b = compare_records([rec(m1, 0.9)], [rec(m2, 0.9)], min_iou=0.9)
    assert b["matched"] == 0 and b["recall"] == 0.0
