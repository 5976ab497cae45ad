"""Validation of user prompts, with errors that say what was wrong and how to fix it.

Conventions: points are (N, 2) XY in original-image pixels, labels (N,) with 1 = foreground,
0 = background, -1 = ignored (padding); boxes are (4,) or (B, 4) XYXY; low-res mask inputs
are (1, 256, 256) logits per prompt. Coordinates may lie anywhere in [0, W] x [0, H].
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

VALID_LABELS = (1, 0, -1)


class PromptError(ValueError):
    """A prompt (points, labels, boxes, mask input) is malformed."""


def check_prompt_given(point_coords: object, point_labels: object, box: object, mask_input: object) -> None:
    """Refuse labels without points, and a call with no prompt at all."""
    if point_coords is None and point_labels is not None:
        raise PromptError("point_labels given without point_coords")
    if point_coords is None and box is None and mask_input is None:
        raise PromptError("no prompt given: pass point_coords + point_labels, a box, or a mask_input")


def _numeric(name: str, value: object) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as e:  # ragged lists and the like
        raise PromptError(f"{name} could not be read as an array: {e}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise PromptError(f"{name} must be numeric, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise PromptError(f"{name} must be real numbers, got dtype {arr.dtype}")
    if arr.size and not np.isfinite(arr.astype(np.float64)).all():
        raise PromptError(f"{name} contains NaN or infinite values")
    return arr


def _inside(name: str, xy: np.ndarray, original_size: Tuple[int, int]) -> None:
    h, w = original_size
    flat = xy.reshape(-1, 2)
    bad = (flat[:, 0] < 0) | (flat[:, 0] > w) | (flat[:, 1] < 0) | (flat[:, 1] > h)
    if bad.any():
        raise PromptError(
            f"{name} has {int(bad.sum())} coordinate(s) outside the {w}x{h} image (first: {flat[bad][0].tolist()}); "
            f"coordinates are XY pixels with 0 <= x <= {w}, 0 <= y <= {h}"
        )


def check_points(
    point_coords: object, point_labels: object, original_size: Tuple[int, int], batch: Optional[int] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """Validate points; returns float64 coords (N, 2) or (B, N, 2) and int64 labels of the
    matching leading shape. ``batch`` allows a leading dimension of that size."""
    if point_labels is None:
        raise PromptError("point_labels must be given with point_coords (1 = foreground, 0 = background)")
    coords = _numeric("point_coords", point_coords)
    labels = _numeric("point_labels", point_labels)
    if coords.ndim == 1 and coords.shape == (2,):
        coords = coords[None]
    if labels.ndim == 0:
        labels = labels[None]
    ok_shape = coords.ndim == 2 or (batch is not None and coords.ndim == 3 and coords.shape[0] == batch)
    if not ok_shape or coords.shape[-1] != 2:
        raise PromptError(f"point_coords must have shape (N, 2) (XY per point), got {coords.shape}")
    if coords.shape[-2] == 0:
        raise PromptError("point_coords is empty; pass None for no points, or at least one (x, y)")
    if labels.shape != coords.shape[:-1]:
        raise PromptError(f"point_labels must have shape {coords.shape[:-1]} (one label per point), got {labels.shape}")
    if not np.isin(labels, VALID_LABELS).all() or (labels != np.round(labels)).any():
        bad = sorted({float(v) for v in np.unique(labels) if v not in VALID_LABELS})
        raise PromptError(f"point_labels must be 1 (foreground), 0 (background) or -1 (ignore); got {bad}")
    _inside("point_coords", coords, original_size)
    return coords.astype(np.float64), labels.astype(np.int64)


def check_boxes(box: object, original_size: Tuple[int, int]) -> np.ndarray:
    """Validate one box (4,) or several (B, 4) XYXY; returns float64 (B, 4)."""
    arr = _numeric("box", box)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise PromptError(f"box must have shape (4,) or (B, 4) as x0, y0, x1, y1; got {np.asarray(box).shape}")
    if arr.shape[0] == 0:
        raise PromptError("box is empty; pass None for no box, or at least one (x0, y0, x1, y1)")
    arr = arr.astype(np.float64)
    flipped = (arr[:, 2] < arr[:, 0]) | (arr[:, 3] < arr[:, 1])
    if flipped.any():
        raise PromptError(f"box must be x0, y0, x1, y1 with x0 <= x1 and y0 <= y1; got {arr[flipped][0].tolist()}")
    _inside("box", arr.reshape(-1, 2, 2), original_size)
    return arr


def check_mask_input(mask_input: object, batch: int, low_res_hw: Tuple[int, int]) -> np.ndarray:
    """Validate low-res mask logits: (1, h, w) for one prompt or (B, 1, h, w); returns float32."""
    arr = _numeric("mask_input", mask_input)
    h, w = low_res_hw
    if arr.ndim == 2 and arr.shape == (h, w):
        arr = arr[None]
    if arr.ndim == 3 and arr.shape == (1, h, w):
        arr = np.broadcast_to(arr[None], (batch, 1, h, w))
    if arr.shape != (batch, 1, h, w):
        raise PromptError(
            f"mask_input must be low-res logits of shape (1, {h}, {w}) (the third output of a previous "
            f"predict call, one mask), got {np.asarray(mask_input).shape}"
        )
    return arr.astype(np.float32)
