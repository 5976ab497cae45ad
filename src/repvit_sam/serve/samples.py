"""Sample pictures for the demo page, made at start-up without any download.

``shapes`` is drawn here with Pillow (always available); scikit-image's ``astronaut`` and
``coffee`` photos are offered too when scikit-image is installed (it ships them).
"""

from __future__ import annotations

import io
from typing import Callable, Dict

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def shapes_image(width: int = 640, height: int = 480, seed: int = 0) -> Image.Image:
    """A synthetic scene: a shaded background, a table-like band and a few solid, textured
    objects with soft shadows -- distinct regions to click on. Deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    sky = np.stack([150 + 60 * yy / height, 180 + 40 * yy / height, 230 - 30 * xx / width], axis=-1)
    base = np.clip(sky + rng.normal(0, 4, sky.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(base)
    draw = ImageDraw.Draw(img)
    floor = int(height * 0.62)
    draw.rectangle((0, floor, width, height), fill=(120, 92, 64))
    for x in range(0, width, 24):  # floor boards
        draw.line((x, floor, x - 40, height), fill=(105, 80, 55), width=2)

    shadow = Image.new("L", img.size, 0)
    sd = ImageDraw.Draw(shadow)
    objects = [
        ("ellipse", (int(width * 0.08), int(height * 0.30), int(width * 0.34), int(height * 0.66)), (210, 60, 50)),
        ("rect", (int(width * 0.42), int(height * 0.22), int(width * 0.62), int(height * 0.70)), (60, 140, 70)),
        ("ellipse", (int(width * 0.68), int(height * 0.48), int(width * 0.80), int(height * 0.64)), (240, 200, 40)),
        ("poly", [(int(width * 0.84), int(height * 0.70)), (int(width * 0.97), int(height * 0.70)), (int(width * 0.905), int(height * 0.36))], (70, 90, 200)),
    ]
    for kind, geom, _ in objects:
        if kind == "poly":
            xs = [p[0] for p in geom]
            box = (min(xs), int(height * 0.66), max(xs) + 12, int(height * 0.74))
        else:
            box = (geom[0] + 10, geom[3] - 12, geom[2] + 18, geom[3] + 10)
        sd.ellipse(box, fill=110)
    shadow = shadow.filter(ImageFilter.GaussianBlur(6))
    img = Image.composite(Image.new("RGB", img.size, (40, 30, 20)), img, shadow)
    draw = ImageDraw.Draw(img)
    for kind, geom, color in objects:
        if kind == "ellipse":
            draw.ellipse(geom, fill=color, outline=tuple(c // 2 for c in color), width=3)
        elif kind == "rect":
            draw.rectangle(geom, fill=color, outline=tuple(c // 2 for c in color), width=3)
            x0, y0, x1, y1 = geom
            for y in range(y0 + 14, y1, 22):  # stripes, so the box is textured
                draw.line((x0 + 4, y, x1 - 4, y), fill=tuple(min(255, c + 50) for c in color), width=4)
        else:
            draw.polygon(geom, fill=color, outline=(30, 40, 100))
    return img


def _skimage(name: str) -> Callable[[], Image.Image]:
    def make() -> Image.Image:
        from skimage import data

        return Image.fromarray(getattr(data, name)())

    return make


def available_samples() -> Dict[str, Callable[[], Image.Image]]:
    """{name: function making the picture}: always ``shapes``; scikit-image's photos if installed."""
    samples: Dict[str, Callable[[], Image.Image]] = {"shapes": shapes_image}
    try:
        import skimage.data  # noqa: F401
    except Exception:  # not installed (or broken): the synthetic sample is enough
        return samples
    samples["astronaut"] = _skimage("astronaut")
    samples["coffee"] = _skimage("coffee")
    return samples


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
