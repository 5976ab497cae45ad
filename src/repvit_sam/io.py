"""Writing images safely (:func:`save_png_atomic`); reading them is :mod:`repvit_sam.image`'s,
whose names are re-exported here (``repvit_sam.io.load_image`` etc.)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from .image import (  # noqa: F401  (re-exported)
    DEFAULT_MAX_PIXELS,
    SUPPORTED_FORMATS,
    ArrayOrImage,
    ImageError,
    PathLike,
    load_image,
    load_image_for_model,
    to_rgb_uint8,
)
from .utils import atomic_write

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_FORMATS",
    "ImageError",
    "load_image",
    "load_image_for_model",
    "save_png_atomic",
    "to_rgb_uint8",
]


# --------------------------------------------------------------------------- writing
# Pillow modes written to PNG unchanged by save_png_atomic.
_PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I;16"})


def _to_png_image(image: ArrayOrImage) -> Image.Image:
    if isinstance(image, Image.Image) and image.mode in _PNG_MODES:
        return image
    if isinstance(image, np.ndarray):
        if image.ndim == 2 and image.dtype == np.bool_:
            return Image.fromarray(np.multiply(image, np.uint8(255), dtype=np.uint8))
        if image.ndim == 2 and image.dtype in (np.uint8, np.uint16):
            return Image.fromarray(np.ascontiguousarray(image))
        if image.ndim == 3 and image.shape[2] == 4 and image.dtype == np.uint8:
            return Image.fromarray(np.ascontiguousarray(image))
    return Image.fromarray(to_rgb_uint8(image))


def save_png_atomic(image: ArrayOrImage, path: PathLike) -> None:
    """Write ``image`` as a PNG at ``path`` atomically.

    The PNG is written to a temporary file in the same directory, flushed to disk and then
    renamed over ``path`` with :func:`os.replace`, so readers see either the old complete file
    or the new complete file, never a partial one; on any error the temporary file is removed
    and an existing ``path`` is untouched. An existing file's permission bits are kept; a new
    file gets the usual ``0o666 & ~umask``.

    ``image``: a Pillow image, saved in its own mode if that is '1', 'L', 'LA', 'P', 'RGB',
    'RGBA' or 'I;16' (e.g. 'L' for masks) and otherwise converted by :func:`to_rgb_uint8`;
    or a numpy array: (H, W) bool -> 8-bit grayscale 0/255 (a mask); (H, W) uint8 -> 8-bit
    grayscale; (H, W) uint16 -> 16-bit grayscale; (H, W, 4) uint8 -> RGBA; anything else is
    converted by :func:`to_rgb_uint8` and saved as RGB.
    """
    p = Path(os.fspath(path))
    parent = p.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"cannot save {str(p)!r}: directory {str(parent)!r} does not exist; create it first")
    png = _to_png_image(image)
    with atomic_write(p, "wb", make_parents=False) as f:
        png.save(f, format="PNG")
