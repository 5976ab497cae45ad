"""Shapes with hard (anti-aliasing-free) masks, posed in an image.

Each shape lives in its own *local* frame, inside the unit disk: ``(u, v)`` with ``u**2 + v**2
<= 1``. A :class:`Pose` places it in the image: pixel ``(x, y)`` (x = column, y = row, pixel
centres at integer coordinates) maps to local coordinates by

    (u, v) = R(-angle) @ (x - cx, y - cy) / scale

so ``scale`` is the radius in pixels of the disk that holds the shape. A pixel belongs to the
shape iff its centre does (no partial coverage), so the painted image and the mask agree exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

#: Shape kinds, in category-id order (COCO category id = index + 1).
KINDS: Tuple[str, ...] = ("ellipse", "polygon", "ring", "star", "bar")
# Relative frequency of each kind when sampling.
_KIND_WEIGHTS = np.array([0.25, 0.25, 0.17, 0.18, 0.15])


@dataclass(frozen=True)
class Pose:
    """Where a shape sits: centre ``(cx, cy)`` in pixels (XY), rotation ``angle`` in radians
    (counter-clockwise in XY, i.e. clockwise on screen since y points down), and ``scale``: the
    radius in pixels of the shape's unit disk."""

    cx: float
    cy: float
    angle: float
    scale: float


@dataclass(frozen=True)
class Shape:
    """A shape in its local frame. ``kind`` is one of :data:`KINDS`.

    * ellipse: ``u**2 + (v / aspect)**2 <= 1``;
    * ring: that ellipse minus the same ellipse shrunk by ``inner``;
    * polygon, star: the polygon ``vertices`` ((V, 2) local UV, even-odd rule);
    * bar: ``|u| <= 1`` and ``|v| <= half_width_px / scale`` (its width in pixels does not
      change with the pose's scale).
    """

    kind: str
    aspect: float = 1.0
    inner: float = 0.0
    vertices: Optional[Tuple[Tuple[float, float], ...]] = None
    half_width_px: float = 0.0

    def contains(self, u: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
        """Bool array, shape of ``u``: which local points ``(u, v)`` lie inside the shape."""
        if self.kind == "ellipse":
            return u * u + (v / self.aspect) ** 2 <= 1.0
        if self.kind == "ring":
            r2 = u * u + (v / self.aspect) ** 2
            return (r2 <= 1.0) & (r2 >= self.inner**2)
        if self.kind == "bar":
            return (np.abs(u) <= 1.0) & (np.abs(v) <= self.half_width_px / scale)
        assert self.vertices is not None
        return _in_polygon(u, v, np.asarray(self.vertices))

    def area(self, scale: float) -> float:
        """Area in pixels at ``scale`` (analytic; the raster differs by the boundary pixels)."""
        if self.kind == "ellipse":
            return math.pi * self.aspect * scale**2
        if self.kind == "ring":
            return math.pi * self.aspect * (1.0 - self.inner**2) * scale**2
        if self.kind == "bar":
            return 2.0 * scale * 2.0 * self.half_width_px
        assert self.vertices is not None
        x, y = np.asarray(self.vertices).T
        return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) * scale**2


def _in_polygon(u: np.ndarray, v: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test of points (u, v) against (V, 2) vertices."""
    inside = np.zeros(u.shape, dtype=bool)
    n = len(verts)
    for i in range(n):
        x1, y1 = verts[i]
        x2, y2 = verts[(i + 1) % n]
        crosses = (y1 > v) != (y2 > v)
        if y2 == y1:
            continue
        x_at = x1 + (v - y1) * ((x2 - x1) / (y2 - y1))
        inside ^= crosses & (u < x_at)
    return inside


@dataclass(frozen=True)
class Footprint:
    """A posed shape rasterised in the window ``[y0:y1, x0:x1]`` of an (H, W) image.

    ``inside``: (y1 - y0, x1 - x0) bool, the shape's pixels in the window; ``u``, ``v``: the
    window's local coordinates (same shape, float64), for textures that move with the shape.
    """

    y0: int
    y1: int
    x0: int
    x1: int
    inside: np.ndarray
    u: np.ndarray
    v: np.ndarray

    def full_mask(self, height: int, width: int) -> np.ndarray:
        """(H, W) bool mask of the shape's pixels in the image."""
        mask = np.zeros((height, width), dtype=bool)
        mask[self.y0 : self.y1, self.x0 : self.x1] = self.inside
        return mask

    @property
    def pixels(self) -> int:
        return int(self.inside.sum())


def rasterise(shape: Shape, pose: Pose, height: int, width: int) -> Footprint:
    """The shape's pixels in an (H, W) image under ``pose`` (an empty window when off-image)."""
    r = pose.scale + 1.0
    x0, x1 = max(0, math.floor(pose.cx - r)), min(width, math.ceil(pose.cx + r) + 1)
    y0, y1 = max(0, math.floor(pose.cy - r)), min(height, math.ceil(pose.cy + r) + 1)
    x1, y1 = max(x0, x1), max(y0, y1)
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    dx, dy = xs - pose.cx, ys - pose.cy
    c, s = math.cos(pose.angle), math.sin(pose.angle)
    u = (c * dx + s * dy) / pose.scale
    v = (-s * dx + c * dy) / pose.scale
    return Footprint(y0, y1, x0, x1, shape.contains(u, v, pose.scale), u, v)


# ----------------------------------------------------------------------------------- sampling
def _polygon(rng: np.random.Generator) -> Tuple[Tuple[float, float], ...]:
    n = int(rng.integers(3, 8))
    step = 2 * math.pi / n
    angles = np.arange(n) * step + rng.uniform(-0.3, 0.3, n) * step
    radii = rng.uniform(0.75, 1.0, n)
    radii /= radii.max()
    return tuple((float(r * math.cos(a)), float(r * math.sin(a))) for r, a in zip(radii, angles))


def _star(rng: np.random.Generator, inner: float) -> Tuple[Tuple[float, float], ...]:
    n = int(rng.integers(5, 9))
    angles = np.arange(2 * n) * (math.pi / n)
    radii = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
    return tuple((float(r * math.cos(a)), float(r * math.sin(a))) for r, a in zip(radii, angles))


def sample_shape(
    rng: np.random.Generator, target_area: float, max_scale: float, px: float = 1.0
) -> Tuple[Shape, float]:
    """A random shape and the scale that gives it about ``target_area`` pixels.

    ``max_scale`` caps the scale (the shape then comes out smaller); ``px`` is the image size
    relative to 256 px, which sets the minimum widths of thin parts (bars, ring bands, star
    arms), so that every object stays at least ~6 px thick at 256 px. Kinds that cannot be made
    thick enough at the requested size fall back to an ellipse or polygon.
    """
    kind = KINDS[int(rng.choice(len(KINDS), p=_KIND_WEIGHTS))]
    min_thick = 6.0 * px
    if kind == "bar":
        half_width = float(rng.uniform(3.0, 6.0)) * px
        shape = Shape("bar", half_width_px=half_width)
        scale = min(target_area / (4.0 * half_width), max_scale)
        if scale >= 3.0 * half_width:
            return shape, scale
        kind = "ellipse"
    if kind == "ring":
        shape = Shape("ring", aspect=float(rng.uniform(0.7, 1.0)), inner=float(rng.uniform(0.45, 0.65)))
        scale = min(math.sqrt(target_area / shape.area(1.0)), max_scale)
        if (1.0 - shape.inner) * shape.aspect * scale >= min_thick:
            return shape, scale
        kind = "polygon"
    if kind == "star":
        shape = Shape("star", vertices=_star(rng, float(rng.uniform(0.4, 0.6))))
        scale = min(math.sqrt(target_area / shape.area(1.0)), max_scale)
        if scale * 0.35 >= min_thick:
            return shape, scale
        kind = "ellipse"
    if kind == "ellipse":
        shape = Shape("ellipse", aspect=float(rng.uniform(0.45, 1.0)))
    else:
        shape = Shape("polygon", vertices=_polygon(rng))
    return shape, min(math.sqrt(target_area / shape.area(1.0)), max_scale)
