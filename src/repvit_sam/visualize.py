"""Pictures of segmentation results: masks as PNGs and masks/prompts drawn over an image.

Pillow and numpy only. Conventions (segment_anything's): images are (H, W, 3) uint8 RGB
arrays; masks are (H, W) bool arrays (True = object); points are (N, 2) XY pixel coordinates
of the image (x = column, y = row) with labels 1 (foreground), 0 (background) or -1 (padding,
not drawn); boxes are (M, 4) XYXY pixel coordinates.
"""

from __future__ import annotations

import colorsys
from typing import Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw

from .image import to_rgb_uint8

__all__ = [
    "BOX_COLOR",
    "NEGATIVE_COLOR",
    "POINT_BORDER_COLOR",
    "POSITIVE_COLOR",
    "mask_to_png",
    "overlay",
    "random_colors",
]

RGB = Tuple[int, int, int]
MasksLike = Union[np.ndarray, Sequence[np.ndarray]]

#: Fill of foreground (label 1) points.
POSITIVE_COLOR: RGB = (0, 200, 0)
#: Fill of background (label 0) points.
NEGATIVE_COLOR: RGB = (220, 0, 0)
#: Border of every point.
POINT_BORDER_COLOR: RGB = (255, 255, 255)
#: Outline of boxes (yellow, to stand apart from the green/red points).
BOX_COLOR: RGB = (255, 210, 0)

_GOLDEN_RATIO_CONJUGATE = 0.618033988749895


def random_colors(n: int, seed: int = 0) -> np.ndarray:
    """``n`` distinct, saturated RGB colours as an (n, 3) uint8 array; deterministic in ``seed``.

    Hues advance by the golden ratio from a start chosen by ``seed``, so consecutive colours are
    far apart on the colour wheel; saturation and brightness alternate to separate colours whose
    hues come close again for large ``n``. The same (n, seed) always gives the same colours, and
    the first k colours do not depend on n.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    start = float(np.random.default_rng(seed).random())
    colors = np.empty((n, 3), dtype=np.uint8)
    for i in range(n):
        hue = (start + i * _GOLDEN_RATIO_CONJUGATE) % 1.0
        saturation = (0.85, 0.6, 0.75)[i % 3]
        value = (0.95, 0.85)[i % 2]
        r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
        colors[i] = (round(r * 255), round(g * 255), round(b * 255))
    return colors


def _as_mask(mask: np.ndarray, what: str) -> np.ndarray:
    """(H, W) bool, or integers (nonzero = object) -> (H, W) bool."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (H, W) array, got shape {tuple(mask.shape)}")
    if mask.dtype == np.bool_:
        return mask
    if mask.dtype.kind in "iu":
        return mask != 0
    raise ValueError(
        f"{what} must be bool (or integer, nonzero = object), got dtype {mask.dtype}; "
        f"threshold logits or probabilities first, e.g. mask > 0"
    )


def mask_to_png(mask: np.ndarray) -> Image.Image:
    """(H, W) bool mask -> Pillow image of mode 'L', size (W, H): 255 for True, 0 for False.

    Integer masks are accepted too (nonzero = object); float masks are refused (threshold them
    first). Save with ``image.save(path)`` or :func:`repvit_sam.io.save_png_atomic`.
    """
    m = _as_mask(mask, "mask")
    return Image.fromarray(np.multiply(m, np.uint8(255), dtype=np.uint8))


def _erode(mask: np.ndarray, iterations: int) -> np.ndarray:
    """Binary erosion with the 4-neighbourhood; pixels outside the image count as background."""
    eroded = mask.copy()
    for _ in range(iterations):
        previous = eroded.copy()
        eroded[1:, :] &= previous[:-1, :]
        eroded[:-1, :] &= previous[1:, :]
        eroded[:, 1:] &= previous[:, :-1]
        eroded[:, :-1] &= previous[:, 1:]
        eroded[0, :] = eroded[-1, :] = False
        eroded[:, 0] = eroded[:, -1] = False
    return eroded


def _mask_list(masks: MasksLike, size: Tuple[int, int]) -> list:
    if isinstance(masks, np.ndarray) and masks.ndim == 2:
        masks = [masks]
    elif isinstance(masks, np.ndarray) and masks.ndim != 3:
        raise ValueError(f"masks must be (H, W), (N, H, W) or a sequence of (H, W); got shape {masks.shape}")
    out = []
    for i, m in enumerate(masks):
        mask = _as_mask(m, f"masks[{i}]")
        if mask.shape != size:
            raise ValueError(f"masks[{i}] has shape {mask.shape} but the image is {size} (H, W)")
        out.append(mask)
    return out


def _color_table(colors: Optional[Sequence[Sequence[int]]], n: int) -> np.ndarray:
    if colors is None:
        return random_colors(n)
    table = np.asarray(colors)
    if table.ndim != 2 or table.shape[1] != 3 or table.shape[0] < n:
        raise ValueError(f"colors must be at least {n} RGB triples (shape (>={n}, 3)), got shape {table.shape}")
    if not np.all(np.isfinite(table)) or table.min() < 0 or table.max() > 255:
        raise ValueError("colors must be RGB triples with values in 0..255")
    return np.rint(table).astype(np.uint8)


def _coords(values: object, width: int, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.size % width or (array.ndim > 0 and array.shape[-1] != width) or array.ndim > 2:
        raise ValueError(f"{what} must have shape (N, {width}) (or ({width},) for one), got {array.shape}")
    array = array.reshape(-1, width)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} contains NaN or infinite coordinates")
    return array


def overlay(
    image: np.ndarray,
    masks: MasksLike,
    *,
    points: Optional[np.ndarray] = None,
    labels: Optional[np.ndarray] = None,
    boxes: Optional[np.ndarray] = None,
    alpha: float = 0.5,
    colors: Optional[Sequence[Sequence[int]]] = None,
) -> Image.Image:
    """Draw masks, points and boxes over ``image``; returns a new RGB Pillow image, size (W, H).

    * ``image``: (H, W, 3) uint8 RGB (other layouts are converted by
      :func:`repvit_sam.image.to_rgb_uint8`); it is not modified.
    * ``masks``: a sequence of (H, W) bool masks, or an (N, H, W) / (H, W) array (e.g. the
      ``masks`` returned by ``SamPredictor.predict``). Mask i is tinted with ``colors[i]``
      (default :func:`random_colors`) as ``round(pixel * (1 - alpha) + color * alpha)`` and
      its inner boundary is drawn in the solid colour, with a thickness growing with the
      image size. Later masks are drawn over earlier ones.
    * ``points``: (N, 2) XY; ``labels``: (N,) with 1 = foreground (green filled circle),
      0 = background (red), -1 = padding (not drawn); ``None`` means all foreground. Circles
      have a white border; their radius grows with the image size.
    * ``boxes``: (M, 4) XYXY, drawn as yellow rectangles (line width grows with image size).
    * ``alpha``: mask opacity in [0, 1].

    Pixels outside every mask, circle and rectangle keep exactly their input values; pixels
    inside a mask change (unless they already have the mask's colour).
    """
    rgb = to_rgb_uint8(image)
    h, w = rgb.shape[:2]
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    mask_list = _mask_list(masks, (h, w))
    table = _color_table(colors, len(mask_list))
    long_side = max(h, w)

    out = rgb.copy()
    outline_px = max(1, round(long_side / 500))
    a = np.float32(alpha)
    for mask, color in zip(mask_list, table):
        if not mask.any():
            continue
        tint = color.astype(np.float32) * a
        pixels = out[mask].astype(np.float32)
        pixels *= np.float32(1.0) - a
        pixels += tint + np.float32(0.5)
        out[mask] = np.floor(pixels).astype(np.uint8)
        out[mask & ~_erode(mask, outline_px)] = color

    result = Image.fromarray(out)
    if points is None and boxes is None:
        return result
    draw = ImageDraw.Draw(result)

    if boxes is not None:
        box_width = max(2, round(long_side / 250))
        for x0, y0, x1, y1 in _coords(boxes, 4, "boxes"):
            draw.rectangle(
                (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), outline=BOX_COLOR, width=box_width
            )

    if points is not None:
        xy = _coords(points, 2, "points")
        if labels is None:
            label_array = np.ones(len(xy), dtype=np.int64)
        else:
            label_array = np.asarray(labels).reshape(-1)
            if label_array.shape[0] != xy.shape[0]:
                raise ValueError(f"labels has {label_array.shape[0]} entries for {xy.shape[0]} points")
            bad = ~np.isin(label_array, (-1, 0, 1))
            if bad.any():
                raise ValueError(f"point labels must be 1 (foreground), 0 (background) or -1 (padding); got {label_array[bad][0]}")
        radius = max(3, round(long_side * 0.012))
        border = max(1, round(radius / 4))
        for (x, y), label in zip(xy, label_array):
            if label == -1:
                continue
            fill = POSITIVE_COLOR if label == 1 else NEGATIVE_COLOR
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill, outline=POINT_BORDER_COLOR, width=border)
    return result
