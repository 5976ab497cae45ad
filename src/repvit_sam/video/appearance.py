"""Appearance of tracked objects in the image embedding: prototypes, re-detection, conflicts.

An object's *prototype* is the unit mean of the L2-normalised embedding cells under its mask
(each cell weighted by the fraction of it the mask covers). :class:`VideoPredictor` uses it
to verify tracked masks, to look for lost objects (:func:`best_cells`) and to settle two
objects claiming the same region (:func:`overlap_losers`). Everything works on one frame's
embedding (1, C, h, w) and masks at the frame size.
"""

from __future__ import annotations

import functools
from typing import Callable, Dict, List, Optional, Set, Tuple

import numpy as np
import torch
from torch.nn import functional as F

from .points import mask_box

CONFLICT_OVERLAP = 0.7  # two objects whose masks share this much of the smaller one claim the same thing


@functools.lru_cache(maxsize=16)
def _axis_map(size: int, resized: int, padded: int, cells: int) -> torch.Tensor:
    """(cells, size): one axis of ``cell_weights`` as a matrix (bilinear resize from ``size`` to
    ``resized`` samples, zero padding to ``padded``, adaptive average pooling to ``cells``),
    made by running torch's own operations on the unit vectors."""
    eye = torch.eye(size, dtype=torch.float64).reshape(size, 1, size, 1)
    m = F.interpolate(eye, size=(resized, 1), mode="bilinear", align_corners=False)
    m = F.pad(m, (0, 0, 0, padded - resized))
    return F.adaptive_avg_pool2d(m, (cells, 1))[:, 0, :, 0].t().float().contiguous()


def cell_weights(masks: np.ndarray, features: torch.Tensor, input_size: Tuple[int, int], img_size: int) -> torch.Tensor:
    """(B, H, W) bool masks at the frame size -> (B, h, w): the covered fraction of each
    embedding cell (masks resized to ``input_size`` and zero-padded to ``img_size`` first).

    Bilinear resizing, zero padding and average pooling are each separable, so the whole map is
    ``R_y M R_x^T`` with two small matrices: a few matrix products instead of resizing every mask
    to the model's input (equal to doing so up to float rounding). Only the rows and columns of
    each mask's bounding box enter the products (the rest of ``M`` is zero): an object covering a
    few percent of the frame costs a few percent of the full product."""
    gh, gw = features.shape[-2:]
    b, h, w = masks.shape
    ry = _axis_map(h, input_size[0], img_size, gh).to(features.device)  # (gh, H)
    rx = _axis_map(w, input_size[1], img_size, gw).to(features.device)  # (gw, W)
    out = torch.zeros(b, gh, gw, device=features.device)
    for i in range(b):
        box = mask_box(masks[i])
        if box is None:
            continue
        x0, y0, x1, y1 = (int(v) for v in box)
        m = torch.as_tensor(np.ascontiguousarray(masks[i, y0 : y1 + 1, x0 : x1 + 1]), device=features.device).to(torch.float32)
        out[i] = ry[:, y0 : y1 + 1] @ (m @ rx[:, x0 : x1 + 1].t())
    return out


@torch.no_grad()
def unit_cells(features: torch.Tensor) -> torch.Tensor:
    """(hw, C): the embedding's cells (1, C, h, w), each L2-normalised."""
    return F.normalize(features[0].float().flatten(1).t(), dim=1)


@torch.no_grad()
def prototypes(masks: np.ndarray, features: torch.Tensor, input_size: Tuple[int, int], img_size: int,
               cells: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, C) unit mean embedding under each mask (each cell normalised first; ``cells``: those
    unit cells, :func:`unit_cells` of ``features``, if already computed)."""
    feats = unit_cells(features) if cells is None else cells  # (hw, C)
    w = cell_weights(masks, features, input_size, img_size).flatten(1)  # (B, hw)
    return F.normalize(w @ feats, dim=1)


@torch.no_grad()
def best_cells(protos: torch.Tensor, features: torch.Tensor, taken: np.ndarray, input_size: Tuple[int, int],
               img_size: int, cells: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, np.ndarray]:
    """For each prototype (L, C), the embedding cell most like it among the cells inside the
    image and not covered by ``taken`` (H, W) bool (other objects found on this frame): its
    cosine similarity (L,) and its centre (L, 2) XY in the model's input frame. A frame with
    no free cell gives similarity -2."""
    feats = unit_cells(features) if cells is None else cells  # (hw, C)
    sim = protos @ feats.t()  # (L, hw)
    gh, gw = features.shape[-2:]
    occupied = cell_weights(taken[None], features, input_size, img_size)[0].flatten() > 0.5
    cell = img_size / gh
    ys, xs = torch.meshgrid(torch.arange(gh, device=features.device), torch.arange(gw, device=features.device), indexing="ij")
    inside = (((ys + 0.5) * cell < input_size[0]) & ((xs + 0.5) * cell < input_size[1])).flatten()
    sim = sim.masked_fill(occupied[None] | ~inside[None], -2.0)
    best, where = sim.max(dim=1)
    y, x = np.divmod(where.cpu().numpy(), gw)
    centres = np.stack([(x + 0.5) * cell, (y + 0.5) * cell], 1).astype(np.float64)
    return best, centres


def overlap_losers(masks: Dict[int, np.ndarray], protos: Dict[int, torch.Tensor],
                   region_prototype: Callable[[np.ndarray], torch.Tensor]) -> Set[int]:
    """Objects that lose a contested region. Two objects whose masks are mostly the same region
    (the smaller one covered for ``CONFLICT_OVERLAP`` of its area) claim the same thing: the
    region goes to the object whose prototype it resembles more (``region_prototype`` maps an
    (H, W) mask to its prototype); the other one is returned. Each object loses at most once."""
    ids: List[int] = [k for k, m in masks.items() if m.any() and k in protos]
    if len(ids) < 2:
        return set()
    boxes = {k: mask_box(masks[k]).astype(int) for k in ids}  # XYXY, inclusive
    area = {k: int(np.count_nonzero(masks[k])) for k in ids}
    losers: Set[int] = set()
    for a in range(len(ids)):
        for b in range(a + 1, len(ids)):
            ka, kb = ids[a], ids[b]
            if ka in losers or kb in losers:
                continue
            (x0, y0, x1, y1), (u0, v0, u1, v1) = boxes[ka], boxes[kb]
            r0, r1, c0, c1 = max(y0, v0), min(y1, v1) + 1, max(x0, u0), min(x1, u1) + 1
            if r0 >= r1 or c0 >= c1:  # disjoint boxes: nothing shared
                continue
            inter = np.count_nonzero(masks[ka][r0:r1, c0:c1] & masks[kb][r0:r1, c0:c1])
            if inter < CONFLICT_OVERLAP * min(area[ka], area[kb]):
                continue
            proto = region_prototype(masks[ka] & masks[kb])
            losers.add(kb if float(proto @ protos[ka]) >= float(proto @ protos[kb]) else ka)
    return losers
