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


def test_mask_coords_scans_the_box_but_returns_every_pixel_in_order():
    """mask_coords looks only inside the mask's bounding box: the same pixels, in the same
    (row-major) order, hence the same fixed-seed subset, as scanning the whole frame."""
    from repvit_sam.video.points import MAX_SAMPLES, mask_coords

    rng = np.random.default_rng(3)
    masks = [np.zeros((40, 60), bool), np.ones((40, 60), bool), rng.random((40, 60)) > 0.7, rng.random((300, 500)) > 0.2]
    one = np.zeros((40, 60), bool)
    one[39, 0] = True
    masks.append(one)
    blob = np.zeros((120, 90), bool)
    blob[30:70, 10:40] = rng.random((40, 30)) > 0.5
    masks.append(blob)
    for m in masks:
        ys, xs = np.nonzero(m)
        full = np.stack([xs, ys], axis=1).astype(np.float64)
        if len(full) > MAX_SAMPLES:
            full = full[np.random.default_rng(0).choice(len(full), MAX_SAMPLES, replace=False)]
        got = mask_coords(m)
        assert got.dtype == np.float64 and got.shape == full.shape and np.array_equal(got, full)


@pytest.mark.parametrize("frame,input_size,img_size,grid", [
    ((480, 854), (576, 1024), 1024, 64),  # a 480p frame in the 1024 model
    ((64, 48), (64, 48), 64, 4),
    ((100, 37), (256, 95), 256, 16),  # upscaled, a width that does not divide
    ((480, 854), (144, 256), 256, 16),  # downscaled
    ((30, 40), (45, 60), 64, 5),  # pooling bins of unequal sizes
])
def test_cell_weights_equal_resize_pad_and_pool(frame, input_size, img_size, grid):
    """The separable form of cell_weights equals resizing every mask to the model's input,
    zero-padding it and average-pooling it to the embedding grid."""
    import torch
    from torch.nn import functional as F

    from repvit_sam.video.appearance import cell_weights

    rng = np.random.default_rng(sum(frame))
    masks = rng.random((4, *frame)) > 0.6
    masks[1] = False
    masks[3] = False  # a compact object away from the borders: only its bounding box enters
    h, w = frame
    masks[3, h // 4 : h // 2, w // 3 : w // 2] = rng.random((h // 2 - h // 4, w // 2 - w // 3)) > 0.2
    feats = torch.zeros(1, 8, grid, grid)
    m = F.interpolate(torch.as_tensor(masks, dtype=torch.float32)[:, None], size=input_size, mode="bilinear", align_corners=False)
    m = F.pad(m, (0, img_size - input_size[1], 0, img_size - input_size[0]))
    want = F.adaptive_avg_pool2d(m, (grid, grid))[:, 0]
    got = cell_weights(masks, feats, input_size, img_size)
    assert got.shape == (4, grid, grid)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert float(got[1].abs().max()) == 0.0


def test_prototypes_from_cached_unit_cells_equal_fresh_ones():
    import torch

    from repvit_sam.video.appearance import best_cells, prototypes, unit_cells

    g = torch.Generator().manual_seed(0)
    feats = torch.randn(1, 16, 8, 8, generator=g)
    masks = np.random.default_rng(1).random((4, 60, 50)) > 0.5
    cells = unit_cells(feats)
    assert cells.shape == (64, 16)
    torch.testing.assert_close(cells.norm(dim=1), torch.ones(64))
    torch.testing.assert_close(prototypes(masks, feats, (128, 107), 128, cells), prototypes(masks, feats, (128, 107), 128))
    protos = prototypes(masks, feats, (128, 107), 128)
    a = best_cells(protos, feats, masks[0], (128, 107), 128, cells)
    b = best_cells(protos, feats, masks[0], (128, 107), 128)
    torch.testing.assert_close(a[0], b[0])
    assert np.array_equal(a[1], b[1])
