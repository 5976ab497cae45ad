"""Query points and boxes from masks (pure numpy).

SAM-PT's query points: ``k`` positive points per mask by K-Medoids on the mask's pixel
coordinates (cluster centres that are themselves mask pixels, spread over the object) and
negative points the same way on the inverted mask. Masks are (H, W) bool; points are (N, 2)
float XY pixel coordinates (x = column, y = row); boxes are XYXY over the covered pixel
indices (x_max is the last covered column).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

MAX_SAMPLES = 600  # mask pixels K-Medoids runs on (a fixed-seed random subset of larger masks)
MAX_REFERENCE = 200  # a medoid update sums distances to at most this many members of its cluster


def kmedoids(coords: np.ndarray, k: int, seed: int = 0, iterations: int = 20) -> np.ndarray:
    """``k`` medoids of ``coords`` ((N, 2) float), as rows of ``coords``; fewer when N < k.

    Initialisation: k-means++ seeding (fixed ``seed``); then alternate assigning every point to
    its nearest medoid and moving each medoid to the member of its cluster with the smallest
    sum of distances to the other members (to a fixed-seed subset of ``MAX_REFERENCE`` of them
    in larger clusters), until nothing changes (at most ``iterations``).
    """
    n = len(coords)
    if n == 0 or k <= 0:
        return np.zeros((0, 2), dtype=np.float64)
    unique = np.unique(coords, axis=0)
    if len(unique) <= k:
        return unique.astype(np.float64)
    rng = np.random.default_rng(seed)
    pts = coords.astype(np.float64)
    idx = [int(rng.integers(n))]
    d2 = ((pts - pts[idx[0]]) ** 2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        nxt = int(rng.choice(n, p=d2 / total)) if total > 0 else int(rng.integers(n))
        idx.append(nxt)
        d2 = np.minimum(d2, ((pts - pts[nxt]) ** 2).sum(1))
    from scipy.spatial.distance import cdist

    medoids = np.array(idx)
    for _ in range(iterations):
        assign = cdist(pts, pts[medoids]).argmin(1)  # (N,) nearest medoid
        new = medoids.copy()
        for c in range(k):
            members = np.flatnonzero(assign == c)
            if len(members) == 0:
                continue
            m = pts[members]
            ref = m if len(m) <= MAX_REFERENCE else m[rng.choice(len(m), MAX_REFERENCE, replace=False)]
            new[c] = members[int(cdist(m, ref).sum(1).argmin())]
        if np.array_equal(np.sort(new), np.sort(medoids)):
            medoids = new
            break
        medoids = new
    return pts[medoids]


def mask_coords(mask: np.ndarray, max_samples: int = MAX_SAMPLES, seed: int = 0) -> np.ndarray:
    """(N, 2) XY of the True pixels (row-major order); a fixed-seed random subset of
    ``max_samples`` if more."""
    box = mask_box(mask)
    if box is None:
        return np.zeros((0, 2), dtype=np.float64)
    x0, y0, x1, y1 = box.astype(int)
    ys, xs = np.nonzero(mask[y0 : y1 + 1, x0 : x1 + 1])  # inside the bounding box: fewer pixels to scan
    ys, xs = ys + y0, xs + x0
    coords = np.stack([xs, ys], axis=1).astype(np.float64)
    if len(coords) > max_samples:
        coords = coords[np.random.default_rng(seed).choice(len(coords), max_samples, replace=False)]
    return coords


def mask_points(mask: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """``k`` K-Medoids points of the mask's pixels ((<=k, 2) XY; empty for an empty mask)."""
    return kmedoids(mask_coords(mask, seed=seed), k, seed=seed)


def mask_medoid(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """The medoid of the mask's pixels ((1, 2) XY; (0, 2) for an empty mask): the pixel with the
    smallest sum of distances to the others, over the same fixed-seed subset of at most
    ``MAX_SAMPLES`` pixels that :func:`mask_points` clusters. Exact (one cluster needs no
    iterations), where ``kmedoids`` with k = 1 estimates it from random reference subsets."""
    coords = mask_coords(mask, seed=seed)
    if len(coords) == 0:
        return np.zeros((0, 2), dtype=np.float64)
    from scipy.spatial.distance import cdist

    return coords[int(cdist(coords, coords).sum(1).argmin())][None]


def query_points(mask: np.ndarray, positive: int = 8, negative: int = 1, seed: int = 0) -> tuple:
    """SAM-PT query points of a mask: (points (P+Q, 2) XY, labels (P+Q,) 1 then 0) with P <=
    ``positive`` K-Medoids points of the mask and Q <= ``negative`` of its complement."""
    pos = mask_points(mask, positive, seed)
    neg = mask_points(~mask, negative, seed) if negative > 0 else np.zeros((0, 2))
    points = np.concatenate([pos, neg]).astype(np.float64)
    labels = np.concatenate([np.ones(len(pos), dtype=np.int64), np.zeros(len(neg), dtype=np.int64)])
    return points, labels


def mask_box(mask: np.ndarray) -> Optional[np.ndarray]:
    """XYXY (4,) float over the covered pixel indices, or None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask[rows[0] : rows[-1] + 1].any(axis=0))  # only the covered rows hold True pixels
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float64)

