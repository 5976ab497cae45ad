"""DAVIS J / F and spatio-temporal AR against cases worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from repvit_sam.evaluation.video_metrics import (
    VideoMatchInput,
    average_recall,
    boundary_radius,
    contour_accuracy,
    davis_summary,
    match_video,
    mean_area,
    region_similarity,
    score_sequence,
    seg2bmap,
    st_iou,
    statistics,
)


def square(h, w, r0, c0, size=2):
    m = np.zeros((h, w), dtype=bool)
    m[r0 : r0 + size, c0 : c0 + size] = True
    return m


def test_region_similarity_cases():
    a = square(6, 6, 1, 1)  # 4 pixels
    b = square(6, 6, 1, 2)  # overlaps a on 2, union 6
    assert region_similarity(a, b) == pytest.approx(2 / 6)
    empty = np.zeros((6, 6), bool)
    assert region_similarity(empty, empty) == 1.0  # empty union counts as 1
    assert region_similarity(empty, a) == 0.0
    with pytest.raises(ValueError, match="differ in size"):
        region_similarity(a, np.zeros((5, 6), bool))


def test_seg2bmap_hand_worked():
    # a 2x2 square at rows/cols 1..2 of a 4x4 image: the map is the square's outline moved half a
    # pixel up-left (Martin's convention), nothing on the last row / column
    expected = np.array([
        [1, 1, 1, 0],
        [1, 0, 1, 0],
        [1, 1, 1, 0],
        [0, 0, 0, 0],
    ], dtype=bool)
    np.testing.assert_array_equal(seg2bmap(square(4, 4, 1, 1)), expected)
    # the last row compares only to the right, the last column only downward, the corner never
    m = np.zeros((3, 3), bool)
    m[2, 1] = True
    b = seg2bmap(m)
    assert b[2, 0] and b[2, 1] and not b[2, 2]
    m = np.zeros((3, 3), bool)
    m[1, 2] = True
    b = seg2bmap(m)
    assert b[0, 2] and b[1, 2] and not b[2, 2]


def test_boundary_radius_is_ceil_of_diagonal_fraction():
    assert boundary_radius((480, 854)) == 8.0  # 0.008 * 979.7 = 7.84
    assert boundary_radius((10, 10)) == 1.0  # 0.008 * 14.1 = 0.11
    assert boundary_radius((10, 10), bound_th=3) == 3.0  # >= 1: pixels


def test_contour_accuracy_hand_worked():
    gt = square(10, 10, 1, 1)  # boundary: 8 pixels at rows 0..2, cols 0..2 (radius 1 here)
    assert contour_accuracy(gt, gt) == 1.0
    # shifted one column: every boundary pixel within the radius-1 disk of the other -> F = 1 (J = 1/3)
    one = square(10, 10, 1, 2)
    assert region_similarity(one, gt) == pytest.approx(1 / 3)
    assert contour_accuracy(one, gt) == pytest.approx(1.0)
    # shifted three columns: only the 3 pixels of the facing columns match on each side -> P = R = 3/8
    three = square(10, 10, 1, 4)
    assert region_similarity(three, gt) == 0.0
    assert contour_accuracy(three, gt) == pytest.approx(3 / 8)


def test_contour_accuracy_empty_masks():
    gt = square(10, 10, 1, 1)
    empty = np.zeros((10, 10), bool)
    assert contour_accuracy(empty, empty) == 1.0  # P = R = 1
    assert contour_accuracy(empty, gt) == 0.0  # P = 1, R = 0
    assert contour_accuracy(gt, empty) == 0.0  # P = 0, R = 1


def test_statistics_hand_worked():
    # n = 4: ids = round(linspace(1, 4, 5) + 1e-10) - 1 = [0, 1, 2, 2, 3]; quarters [0:2] and [2:4]
    m, r, d = statistics([1.0, 1.0, 0.0, 0.0])
    assert (m, r, d) == (0.5, 0.5, 1.0)
    # n = 8: ids = [0, 2, 4, 5, 7]: first quarter v[0:3], last v[5:8]; 0.5 is not above 0.5
    m, r, d = statistics([1, 1, 1, 1, 0.5, 0.5, 0, 0])
    assert m == pytest.approx(5 / 8)
    assert r == pytest.approx(4 / 8)
    assert d == pytest.approx(1 - 0.5 / 3)


def _labels(h, w, objs):
    """A label image from {id: mask}."""
    out = np.zeros((h, w), np.uint8)
    for k, m in objs.items():
        out[m] = k
    return out


def test_sequence_with_empty_frames_lost_and_reentering_objects():
    h, w = 8, 8
    a = square(h, w, 1, 1)
    b = square(h, w, 4, 4)
    none = np.zeros((h, w), bool)
    # 6 frames (frames 1..4 scored). Object 2 leaves on frames 2-3 and comes back on frame 4.
    gt = [_labels(h, w, {1: a, 2: b}), _labels(h, w, {1: a, 2: b}), _labels(h, w, {1: a}), _labels(h, w, {1: a}),
          _labels(h, w, {1: a, 2: b}), _labels(h, w, {1: a, 2: b})]
    # The prediction loses object 1 on frame 3 (empty), keeps object 2 empty while it is away,
    # picks it up again on frame 4, and ends with garbage on the last frame (not scored).
    pred = [gt[0], _labels(h, w, {1: a, 2: b}), _labels(h, w, {1: a}), _labels(h, w, {}), _labels(h, w, {1: a, 2: b}),
            np.full((h, w), 2, np.uint8)]
    obj1, obj2 = score_sequence("s", gt, pred)
    np.testing.assert_allclose(obj1.j, [1, 1, 0, 1])  # lost on frame 3
    np.testing.assert_allclose(obj2.j, [1, 1, 1, 1])  # empty while absent counts 1, re-entry found
    np.testing.assert_allclose(obj1.f, [1, 1, 0, 1])
    np.testing.assert_allclose(obj2.f, [1, 1, 1, 1])
    s1 = obj1.stats()
    # ids for n = 4: [0, 1, 2, 2, 3] -> first quarter v[0:2] = [1, 1], last v[2:4] = [0, 1]
    assert s1["J-Mean"] == 0.75 and s1["J-Recall"] == 0.75 and s1["J-Decay"] == pytest.approx(0.5)
    summary = davis_summary([obj1, obj2])
    assert summary["J-Mean"] == pytest.approx((0.75 + 1.0) / 2)
    assert summary["J&F-Mean"] == pytest.approx((summary["J-Mean"] + summary["F-Mean"]) / 2)
    assert list(summary) == ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]


def test_object_missing_from_results_is_empty():
    h, w = 8, 8
    a, b = square(h, w, 1, 1), square(h, w, 4, 4)
    gt = [_labels(h, w, {1: a, 2: b})] * 4
    pred = [_labels(h, w, {1: a})] * 4  # object 2 never predicted
    obj1, obj2 = score_sequence("s", gt, pred)
    np.testing.assert_allclose(obj1.j, [1, 1])
    np.testing.assert_allclose(obj2.j, [0, 0])
    np.testing.assert_allclose(obj2.f, [0, 0])


def test_result_label_beyond_the_objects_is_an_error():
    h, w = 8, 8
    gt = [_labels(h, w, {1: square(h, w, 1, 1)})] * 3
    pred = [gt[0], _labels(h, w, {3: square(h, w, 1, 1)}), gt[0]]
    with pytest.raises(ValueError, match="object label 3 but the sequence has 1 objects"):
        score_sequence("s", gt, pred)


def test_void_label_is_background_when_counting_objects():
    h, w = 8, 8
    first = _labels(h, w, {1: square(h, w, 1, 1)})
    first[6:, 6:] = 255
    objs = score_sequence("s", [first, first, first], [first, _labels(h, w, {1: square(h, w, 1, 1)}), first])
    assert len(objs) == 1


def test_st_iou_sums_over_frames():
    a = square(6, 6, 0, 0)  # area 4
    b = square(6, 6, 0, 1)  # area 4, overlap with a: 2
    # frame 0: both (I 2, U 6); frame 1: only the prediction (U += 4); frame 2: neither
    pred = [a, a, None]
    gt = [b, None, None]
    assert st_iou(pred, gt) == pytest.approx(2 / 10)
    assert st_iou([None], [None]) == 0.0
    assert mean_area([a, None, square(6, 6, 0, 0, 3)]) == pytest.approx((4 + 9) / 2)


def test_match_video_greedy_by_score():
    # two predictions (descending score) and two tracks; the first prediction takes track 0 (its
    # best), so the second can only match track 1 if its IoU reaches the threshold
    ious = np.array([[0.9, 0.6], [0.8, 0.55]])
    ignore = np.zeros(2, bool)
    assert match_video(ious, ignore, 0.5) == (2, 2)
    assert match_video(ious, ignore, 0.6) == (1, 2)  # 0.55 < 0.6
    assert match_video(ious, np.array([False, True]), 0.5) == (1, 1)  # ignored tracks do not count


def test_average_recall_over_thresholds_and_sizes():
    # one video: a small track matched at IoU 0.72 (recall 1 for thresholds 0.50..0.70: 5 of 10)
    # and a large track never matched
    v = VideoMatchInput(ious=np.array([[0.72, 0.0]]), gt_areas=np.array([100.0, 20000.0]), gt_crowd=np.array([False, False]))
    ar = average_recall([v])
    assert ar["AR"] == pytest.approx(0.25)  # (5 x 1/2 + 5 x 0) / 10
    assert ar["AR_small"] == pytest.approx(0.5)
    assert math.isnan(ar["AR_medium"])
    assert ar["AR_large"] == 0.0
    # pooled over videos: a second video with one perfectly matched medium track
    w = VideoMatchInput(ious=np.array([[1.0]]), gt_areas=np.array([2000.0]), gt_crowd=np.array([False]))
    assert average_recall([v, w])["AR"] == pytest.approx((5 * 2 / 3 + 5 * 1 / 3) / 10)
    # crowd tracks are ignored
    c = VideoMatchInput(ious=np.array([[0.0]]), gt_areas=np.array([2000.0]), gt_crowd=np.array([True]))
    assert average_recall([w, c])["AR"] == 1.0
