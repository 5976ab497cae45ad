"""Query points (K-Medoids) and the Lucas-Kanade tracker."""

from __future__ import annotations

import numpy as np
import pytest

from repvit_sam.video.points import kmedoids, mask_box, mask_points, query_points
from repvit_sam.video.trackers import LucasKanadeTracker


def test_kmedoids_finds_cluster_members():
    rng = np.random.default_rng(0)
    centres = np.array([[10.0, 10.0], [80.0, 15.0], [40.0, 70.0]])
    pts = np.concatenate([c + rng.normal(0, 2, (50, 2)) for c in centres])
    med = kmedoids(pts, 3)
    assert med.shape == (3, 2)
    assert all(any((pts == m).all(1)) for m in med)  # medoids are input points
    # one medoid per cluster, each near its centre
    d = np.linalg.norm(med[:, None] - centres[None], axis=2)
    assert sorted(d.argmin(1).tolist()) == [0, 1, 2] and d.min(1).max() < 4
    np.testing.assert_array_equal(kmedoids(pts, 3), med)  # deterministic
    assert len(kmedoids(pts[:2], 5)) == 2  # fewer points than k


def test_query_points_inside_and_outside():
    mask = np.zeros((60, 80), bool)
    mask[10:40, 20:50] = True
    pts, labels = query_points(mask, positive=8, negative=1)
    assert pts.shape == (9, 2) and labels.tolist() == [1] * 8 + [0]
    xs, ys = pts[:, 0].astype(int), pts[:, 1].astype(int)
    assert mask[ys[:8], xs[:8]].all() and not mask[ys[8], xs[8]]
    assert len(np.unique(pts[:8], axis=0)) == 8  # spread, not repeated
    np.testing.assert_array_equal(mask_box(mask), [20, 10, 49, 39])
    assert mask_box(np.zeros((3, 3), bool)) is None
    assert mask_points(np.zeros((3, 3), bool), 4).shape == (0, 2)


def textured(h, w, seed=0):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    g = ndimage.gaussian_filter(rng.random((h, w)), 2.0)
    g = (255 * (g - g.min()) / (g.max() - g.min())).astype(np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


def test_lucas_kanade_follows_a_shift_and_marks_vanishing_points():
    pytest.importorskip("cv2")
    base = textured(120, 160)
    shifted = np.roll(base, (3, 5), axis=(0, 1))  # content moves 5 right, 3 down
    tr = LucasKanadeTracker()
    tr.reset(base)
    pts = np.array([[60.0, 50.0], [100.0, 70.0], [80.0, 40.0]])
    tr.set_points("a", pts)
    out = tr.step(shifted)
    moved, vis = out["a"]
    assert vis.all()
    np.testing.assert_allclose(moved, pts + [5, 3], atol=0.3)
    # the content under point 0 is replaced by a flat patch: the forward-backward check fails
    occluded = shifted.copy()
    y, x = moved[0].round().astype(int)[::-1]
    occluded[y - 15 : y + 16, x - 15 : x + 16] = 128
    tr.set_points("b", moved)
    out = tr.step(occluded)
    assert not out["b"][1][0] and out["b"][1][1:].all()
    # once invisible, a point stays invisible (and keeps its position) until set again
    out2 = tr.step(occluded)
    assert not out2["b"][1][0]
    np.testing.assert_array_equal(out2["b"][0][0], out["b"][0][0])


def test_lucas_kanade_border_and_downscaling():
    pytest.importorskip("cv2")
    base = textured(240, 320, seed=1)
    tr = LucasKanadeTracker(max_side=160, border=0.05)  # tracks at half resolution
    tr.reset(base)
    tr.set_points(1, np.array([[2.0, 100.0], [160.0, 120.0]]))  # first one inside the 5% border
    moved, vis = tr.step(np.roll(base, 4, axis=1))[1]
    assert vis.tolist() == [False, True]
    np.testing.assert_allclose(moved[1], [164, 120], atol=0.6)  # full-resolution coordinates
