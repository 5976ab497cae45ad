"""Object textures and backgrounds, kept apart by saturation.

Every object is painted in one saturated colour (HSV saturation >= 0.6) whose brightness a
pattern (flat, stripes, checks, gradient, waves) modulates in [0.72, 1] of the colour's value
(>= 0.6), so its hue is constant and its channel spread ``max(RGB) - min(RGB)`` is at least
``0.6 * 0.6 * 0.72 * 255 ~ 66``. Backgrounds and their clutter (small marks, lines and dots)
are nearly grey (saturation <= 0.15, spread <= 39) with noise, gradients and stripes in
brightness. So an annotated object is never confused with clutter, and
:data:`SPREAD_THRESHOLD` separates object pixels from background pixels exactly.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Tuple

import numpy as np
from PIL import Image, ImageDraw

#: Channel spread (max - min of R, G, B) above which a pixel is an object's, below a background's.
SPREAD_THRESHOLD = 52
PATTERNS: Tuple[str, ...] = ("flat", "stripes", "checks", "gradient", "waves")

_GOLDEN = 0.618033988749895


def hsv_rgb(h: float, s: float, v: float) -> np.ndarray:
    """One HSV colour (all in [0, 1]) as float64 RGB in [0, 255], shape (3,)."""
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float64) * 255.0


@dataclass(frozen=True)
class ObjectTexture:
    """A saturated colour (``rgb``: float (3,), at full pattern brightness) times a brightness
    pattern evaluated in the object's local frame, so the texture moves, turns and scales with
    the object. ``period`` (px at the object's reference scale), ``angle`` and ``low`` (the
    darkest factor) shape the pattern; ``waves`` is (3, 3) rows of (kx, ky, phase)."""

    rgb: Tuple[float, float, float]
    hue: float
    pattern: str
    period: float
    angle: float
    low: float
    waves: Tuple[Tuple[float, float, float], ...]

    def render(self, u: np.ndarray, v: np.ndarray, ref_scale: float) -> np.ndarray:
        """(h, w, 3) uint8 colours at local coordinates ``u``, ``v`` ((h, w) each); ``ref_scale``
        turns local units into the pattern's pixels (the object's scale when created)."""
        x, y = u * ref_scale, v * ref_scale
        c, s = math.cos(self.angle), math.sin(self.angle)
        a, b = c * x + s * y, -s * x + c * y
        if self.pattern == "flat":
            f = np.ones_like(x)
        elif self.pattern == "stripes":
            f = np.where(np.floor(a / self.period) % 2 == 0, 1.0, self.low)
        elif self.pattern == "checks":
            f = np.where((np.floor(a / self.period) + np.floor(b / self.period)) % 2 == 0, 1.0, self.low)
        elif self.pattern == "gradient":
            f = 1.0 - (1.0 - self.low) * np.clip((a / ref_scale + 1.0) / 2.0, 0.0, 1.0)
        else:  # waves
            acc = np.zeros_like(x)
            for kx, ky, ph in self.waves:
                acc += np.sin(kx * x + ky * y + ph)
            f = 1.0 - (1.0 - self.low) * (0.5 + acc / (2 * len(self.waves)))
        return np.rint(f[..., None] * np.asarray(self.rgb)).astype(np.uint8)


def object_textures(rng: np.random.Generator, n: int, px: float = 1.0) -> list:
    """``n`` object textures whose hues are spread by the golden ratio from a random start
    (pairwise hue distance >= ~0.09 for n <= 8). ``px``: image size relative to 256 px."""
    start = float(rng.random())
    out = []
    for i in range(n):
        hue = (start + i * _GOLDEN) % 1.0
        rgb = hsv_rgb(hue, float(rng.uniform(0.6, 1.0)), float(rng.uniform(0.6, 1.0)))
        pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
        waves = tuple(
            (float(2 * math.pi / wl * math.cos(t)), float(2 * math.pi / wl * math.sin(t)), float(p))
            for wl, t, p in zip(rng.uniform(8, 30, 3) * px, rng.uniform(0, 2 * math.pi, 3), rng.uniform(0, 2 * math.pi, 3))
        )
        out.append(
            ObjectTexture(
                rgb=tuple(float(c) for c in rgb), hue=hue, pattern=pattern,
                period=float(rng.uniform(4.0, 12.0)) * px, angle=float(rng.uniform(0, math.pi)),
                low=float(rng.uniform(0.72, 0.85)), waves=waves,
            )
        )
    return out


def _smooth_noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W) smooth noise in about [-1, 1]: a coarse random grid, cubic-interpolated."""
    from scipy.ndimage import map_coordinates

    g = int(rng.integers(3, 12))
    coarse = rng.uniform(-1.0, 1.0, (g + 1, g + 1))
    ys = np.linspace(0, g, height)
    xs = np.linspace(0, g, width)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return np.clip(map_coordinates(coarse, [yy, xx], order=3, mode="nearest"), -1.0, 1.0)


def background(rng: np.random.Generator, height: int, width: int, clutter: bool = True) -> np.ndarray:
    """(H, W, 3) uint8 nearly grey background: brightness noise, gradient and/or stripes, then
    (with ``clutter``, on a coin flip) 15-60 small grey marks, then fine grey grain."""
    px = min(height, width) / 256.0
    hue, sat, v0 = float(rng.random()), float(rng.uniform(0.0, 0.15)), float(rng.uniform(0.3, 0.8))
    use = rng.random(3) < 0.5
    if not use.any():
        use[int(rng.integers(3))] = True
    value = np.full((height, width), v0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    if use[0]:  # noise
        value += 0.12 * _smooth_noise(rng, height, width)
    if use[1]:  # gradient
        t = float(rng.uniform(0, 2 * math.pi))
        proj = (math.cos(t) * xx + math.sin(t) * yy) / max(height, width)
        value += 0.25 * (proj - proj.mean())
    if use[2]:  # stripes
        t, period = float(rng.uniform(0, math.pi)), float(rng.uniform(6, 30)) * px
        value += np.where(np.floor((math.cos(t) * xx + math.sin(t) * yy) / period) % 2 == 0, 0.07, -0.07)
    value = np.clip(value, 0.12, 0.95)
    img = value[..., None] * (hsv_rgb(hue, sat, 1.0) / 255.0)
    canvas = Image.fromarray(np.rint(img * 255.0).astype(np.uint8))
    if clutter and rng.random() < 0.6:
        draw = ImageDraw.Draw(canvas)
        for _ in range(int(rng.integers(15, 61))):
            col = hsv_rgb(float(rng.random()), float(rng.uniform(0, 0.15)),
                          float(np.clip(v0 + rng.choice([-1, 1]) * rng.uniform(0.1, 0.3), 0.05, 1.0)))
            fill = tuple(int(c) for c in np.rint(col))
            x, y = float(rng.uniform(0, width)), float(rng.uniform(0, height))
            if rng.random() < 0.5:
                r = float(rng.uniform(1.5, 6.0)) * px
                draw.ellipse((x - r, y - r * float(rng.uniform(0.5, 1)), x + r, y + r), fill=fill)
            else:
                t, length = float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(5, 20)) * px
                draw.line((x, y, x + length * math.cos(t), y + length * math.sin(t)), fill=fill,
                          width=int(rng.integers(1, 3)))
    out = np.asarray(canvas).astype(np.int16)
    grain = np.rint(rng.normal(0.0, 3.0, (height, width))).astype(np.int16)  # same on R, G, B: stays grey
    return np.clip(out + grain[..., None], 0, 255).astype(np.uint8)
