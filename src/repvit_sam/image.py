"""Images without torch: decoding files, converting arrays to 8-bit RGB, and the resize
geometry of the model's input. Used by :mod:`repvit_sam.io`, the predictors' transforms and the
torch-free runtimes (:mod:`repvit_sam.onnx_runtime`), so every entry point accepts the same
images and refuses the same ones with the same message.

Conventions (segment_anything's): an image is an (H, W, 3) ``uint8`` RGB numpy array, H rows
by W columns; sizes are (H, W).

Reading (:func:`load_image`, :func:`load_image_for_model`):

* Formats: JPEG (including multi-picture MPO files from cameras), PNG, TIFF, WebP and BMP,
  decoded by Pillow (see :data:`SUPPORTED_FORMATS`). Other formats are refused, which also
  keeps Pillow's rarer and riskier decoders out of reach. Multi-frame files (TIFF pages,
  animated WebP) give their first frame.
* The EXIF orientation tag is applied, so the array is the picture as a viewer shows it.
* The file is decoded completely while loading, so a truncated or corrupt file fails in the
  loader with an :class:`ImageError` naming it (truncated images are never padded with grey).
* Decompression bombs: the pixel count is read from the header and checked against
  ``max_pixels`` before anything is decoded. Pillow's own process-wide limit
  (``PIL.Image.MAX_IMAGE_PIXELS``, whose error threshold is twice its value) still applies on
  top of ``max_pixels``; both are reported as :class:`ImageError`.
* Pixel formats are converted to RGB ``uint8`` by the rules of :func:`to_rgb_uint8`.

Every failure raises :class:`ImageError` (a ``ValueError``) with a one-line message saying
which file or array was wrong, what was wrong with it and what to do.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Tuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .utils import one_line

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_FORMATS",
    "ImageError",
    "load_image",
    "load_image_for_model",
    "preprocess_shape",
    "resize_longest_side",
    "to_rgb_uint8",
]

PathLike = Union[str, "os.PathLike[str]"]
ArrayOrImage = Union[np.ndarray, Image.Image]

#: Default ``max_pixels``: 178,956,970 pixels (e.g. 13,377 x 13,377), the threshold at which
#: Pillow itself raises ``DecompressionBombError`` with its default settings (twice its
#: default ``MAX_IMAGE_PIXELS``). An RGB image of that size takes ~537 MB as a numpy array.
DEFAULT_MAX_PIXELS = 178_956_970

#: Pillow format names :func:`load_image` accepts (Pillow opens MPO files as JPEG).
SUPPORTED_FORMATS: Tuple[str, ...] = ("JPEG", "PNG", "TIFF", "WEBP", "BMP")

# Pillow modes holding 16-bit / 32-bit integer or float samples: converted through numpy by the
# array rules (Pillow's own convert() would clip them to 0..255 instead of scaling).
_NUMERIC_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
# Modes Pillow converts to RGB itself (alpha dropped, palettes looked up, colour spaces mapped).
_PIL_CONVERTIBLE_MODES = frozenset(
    {"1", "L", "P", "PA", "LA", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
)


class ImageError(ValueError):
    """An image file or array that cannot be turned into an (H, W, 3) uint8 RGB image."""


# --------------------------------------------------------------------------- conversions
def _describe(array: np.ndarray) -> str:
    return f"array of shape {tuple(array.shape)} and dtype {array.dtype}"


def _float_to_uint8(array: np.ndarray, what: str) -> np.ndarray:
    """Floats in [0, 1] -> uint8 via floor(x * 255 + 0.5) (round half up)."""
    if array.dtype.itemsize < 4:  # float16: compute in float32
        array = array.astype(np.float32)
    lo, hi = array.min(), array.max()  # NaN propagates into both; inf shows up as a bound
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ImageError(
            f"{what} contains NaN or infinite values; replace them "
            f"(e.g. np.nan_to_num) and scale the image to [0, 1] or convert it to uint8 first"
        )
    if lo < 0 or hi > 1:
        raise ImageError(
            f"{what} has values in [{float(lo):g}, {float(hi):g}] but float images must lie in "
            f"[0, 1]; divide by the maximum (e.g. 255) or convert to uint8 with clipping first"
        )
    scaled = array * array.dtype.type(255)
    scaled += array.dtype.type(0.5)
    np.floor(scaled, out=scaled)
    return scaled.astype(np.uint8)


def _array_to_rgb(array: np.ndarray, what: str) -> np.ndarray:
    """The array rules of :func:`to_rgb_uint8`; ``what`` names the input in error messages."""
    shape_ok = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4))
    if not shape_ok:
        raise ImageError(
            f"{what} is not an image: expected (H, W) grayscale or (H, W, C) with C = 1, 3 "
            f"(RGB) or 4 (RGBA); got {_describe(array)}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"{what} is empty ({_describe(array)}); an image needs H, W >= 1")
    # Select channels first so dtype conversions touch as little data as possible.
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[..., :3]  # RGBA: drop alpha
    elif array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]

    kind = array.dtype.kind
    if array.dtype == np.uint8:
        pass
    elif kind == "b":
        array = np.multiply(array, np.uint8(255), dtype=np.uint8)
    elif kind == "u" and array.dtype.itemsize == 2:
        array = (array >> 8).astype(np.uint8)
    elif kind == "f":
        array = _float_to_uint8(array, what)
    else:
        raise ImageError(
            f"{what} has an unsupported dtype: {_describe(array)}; accepted are uint8, uint16 "
            f"(scaled by >> 8), bool (0/255) and floats in [0, 1]; convert it to uint8 first"
        )

    if array.ndim == 2:  # grayscale: replicate to three channels
        return np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array)


def _int32_as_uint16(array: np.ndarray, what: str) -> np.ndarray:
    """Pillow mode 'I' (int32) holding 16-bit samples -> uint16; other ranges are refused."""
    lo, hi = int(array.min()), int(array.max())
    if lo < 0 or hi > 65535:
        raise ImageError(
            f"{what} is a 32-bit integer image with values in [{lo}, {hi}], outside the 16-bit "
            f"range 0..65535 this loader understands; convert it to 8-bit RGB first"
        )
    return array.astype(np.uint16)


def _pil_numeric_to_rgb(image: Image.Image, what: str) -> np.ndarray:
    array = np.asarray(image)
    if image.mode == "I":
        array = _int32_as_uint16(array, what)
    return _array_to_rgb(array, what)


def _pil_to_rgb_image(image: Image.Image, what: str) -> Image.Image:
    """A Pillow image of any supported mode -> a mode 'RGB' Pillow image (``image`` itself if
    it already is one), by the rules of :func:`to_rgb_uint8`."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _NUMERIC_MODES:
        return Image.fromarray(_pil_numeric_to_rgb(image, what))
    if mode in _PIL_CONVERTIBLE_MODES:
        try:
            with warnings.catch_warnings():
                # Palette images with a transparency table: dropping alpha is what we want.
                warnings.filterwarnings("ignore", message="Palette images with Transparency")
                return image.convert("RGB")
        except ValueError as exc:  # e.g. 'La', which Pillow cannot convert
            raise ImageError(f"{what} has Pillow mode {mode!r} that cannot be converted to RGB ({one_line(exc)}); "
                             f"re-save it as an 8-bit RGB image") from exc
    raise ImageError(
        f"{what} has unsupported Pillow mode {mode!r}; re-save it as 8-bit RGB, RGBA or grayscale"
    )


# Large images are copied out of Pillow in horizontal bands of about this many bytes.
_BAND_BYTES = 16 * 1024 * 1024


def _rgb_image_to_array(rgb: Image.Image) -> np.ndarray:
    """Mode 'RGB' Pillow image -> new writable (H, W, 3) uint8 array.

    ``np.array(image)`` would hold two full-size copies at once (Pillow's exported bytes and
    the array); large images are instead copied band by band into one preallocated array.
    """
    width, height = rgb.size
    rows = max(1, _BAND_BYTES // (3 * width))
    if rows >= height:
        return np.array(rgb)
    out = np.empty((height, width, 3), dtype=np.uint8)
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        with rgb.crop((0, top, width, bottom)) as band:
            out[top:bottom] = np.asarray(band)
    return out


def _pil_to_rgb_array(image: Image.Image, what: str) -> np.ndarray:
    if image.mode in _NUMERIC_MODES:  # straight to numpy: no intermediate Pillow image
        return _pil_numeric_to_rgb(image, what)
    rgb = _pil_to_rgb_image(image, what)
    array = _rgb_image_to_array(rgb)
    if rgb is not image:
        rgb.close()
    return array


def to_rgb_uint8(image: ArrayOrImage) -> np.ndarray:
    """Convert a numpy array or a Pillow image to an (H, W, 3) uint8 RGB array.

    Shapes (numpy arrays):

    * (H, W) and (H, W, 1): grayscale, replicated to the three channels;
    * (H, W, 3): RGB, kept;
    * (H, W, 4): RGBA, the alpha channel is dropped (not composited: transparent pixels keep
      their stored colour, as segment_anything users expect);
    * anything else (2 or 5+ channels, 1-D, 4-D, empty) is refused.

    Dtypes (numpy arrays):

    * uint8: kept. A C-contiguous (H, W, 3) uint8 array is returned as is (no copy, same memory);
    * bool: False -> 0, True -> 255;
    * uint16: scaled to 8 bits by ``value >> 8`` (0..65535 -> 0..255);
    * float16/32/64: must be finite and within [0, 1]; mapped by ``floor(x * 255 + 0.5)``
      (x * 255 rounded half up). Values outside [0, 1], NaN or inf are refused;
    * anything else (signed or 32/64-bit integers, complex, object) is refused, naming the
      shape and dtype.

    Pillow images: RGB is kept; '1' gives 0/255; 'L' is replicated; 'P'/'PA' are looked up in
    their palette; 'RGBA', 'RGBX', 'LA', 'PA' lose their alpha; 'CMYK', 'YCbCr', 'LAB', 'HSV'
    are converted to RGB by Pillow; 16-bit modes ('I;16', 'I;16B', ...) follow the uint16 rule;
    'I' (32-bit integers, as Pillow may represent 16-bit files) must hold 0..65535 and then
    follows the uint16 rule; 'F' follows the float rule.

    The result is always a new, writable array except in the no-copy uint8 case above.
    Raises :class:`ImageError` for anything that does not fit these rules.
    """
    if isinstance(image, Image.Image):
        return _pil_to_rgb_array(image, f"Pillow image (mode {image.mode!r}, size {image.size})")
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image, "image array")
    raise ImageError(
        f"expected a numpy array or a PIL.Image.Image, got {type(image).__name__}; "
        f"wrap array-likes with np.asarray first"
    )


# --------------------------------------------------------------------------- reading
def _check_path(path: PathLike) -> Path:
    p = Path(os.fspath(path))
    if not p.exists():
        raise ImageError(f"image file not found: {str(p)!r}; check the path and working directory")
    if p.is_dir():
        raise ImageError(f"{str(p)!r} is a directory, not an image file; pass the path of one image")
    return p


def _limit_message(p: Path, pixels: int, limit: int, size: Tuple[int, int]) -> str:
    w, h = size
    return (
        f"image {str(p)!r} has {pixels:,} pixels ({w} x {h}), more than the limit of {limit:,} "
        f"(decompression-bomb protection); if you trust the file, pass a larger "
        f"max_pixels (or max_pixels=None)"
    )


def _open_decoded(path: PathLike, max_pixels: int | None) -> Tuple[Image.Image, Path]:
    """Open ``path``, check its size, decode it fully and apply the EXIF orientation."""
    p = _check_path(path)
    if max_pixels is not None and max_pixels < 1:
        raise ImageError(f"max_pixels must be a positive integer or None, got {max_pixels!r}")
    try:
        with warnings.catch_warnings():
            # Our own max_pixels is the policy; Pillow's warning tier would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(p, formats=list(SUPPORTED_FORMATS))
    except UnidentifiedImageError as exc:
        raise ImageError(
            f"{str(p)!r} is not a readable image: not recognised as "
            f"{', '.join(SUPPORTED_FORMATS)} (wrong file, unsupported format or damaged header); "
            f"convert it to PNG or JPEG"
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(
            f"image {str(p)!r} was refused by Pillow's global decompression-bomb limit "
            f"(PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}): {one_line(exc)}; if you trust the "
            f"file, raise PIL.Image.MAX_IMAGE_PIXELS as well as max_pixels"
        ) from exc
    except PermissionError as exc:
        raise ImageError(f"cannot read {str(p)!r}: permission denied; check the file's permissions") from exc
    except Exception as exc:  # I/O errors, or a plugin tripping over a malformed header
        raise ImageError(f"cannot open image {str(p)!r}: {one_line(exc)}; the file may be damaged") from exc

    try:
        width, height = image.size
        pixels = width * height
        if max_pixels is not None and pixels > max_pixels:
            raise ImageError(_limit_message(p, pixels, max_pixels, image.size))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image.load()
        except ImageError:
            raise
        except MemoryError:
            raise
        except Image.DecompressionBombError as exc:  # e.g. a TIFF tile larger than the image
            raise ImageError(
                f"image {str(p)!r} was refused by Pillow's decompression-bomb check while "
                f"decoding: {one_line(exc)}; if you trust the file, raise PIL.Image.MAX_IMAGE_PIXELS"
            ) from exc
        except Exception as exc:  # truncated data, broken streams, bad CRCs, ...
            raise ImageError(
                f"could not decode image {str(p)!r} ({image.format}, {width} x {height}): "
                f"{one_line(exc)}; the file is probably truncated or corrupt, re-download or re-export it"
            ) from exc
        try:
            ImageOps.exif_transpose(image, in_place=True)
        except Exception as exc:  # malformed EXIF block: keep the stored orientation
            warnings.warn(
                f"ignoring unreadable EXIF orientation of {str(p)!r}: {one_line(exc)}", RuntimeWarning, stacklevel=3
            )
    except BaseException:
        image.close()
        raise
    return image, p


def load_image(path: PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array, oriented by its EXIF tag.

    ``path``: a JPEG, PNG, TIFF, WebP or BMP file. ``max_pixels``: the largest W * H accepted
    (checked from the header, before decoding); ``None`` disables this check, leaving only
    Pillow's global limit. Pixel formats are converted by the rules of :func:`to_rgb_uint8`
    (grayscale replicated, alpha dropped, 16-bit scaled by ``>> 8``, ...). (H, W) is the size
    after the EXIF orientation, i.e. rotated for portrait photos stored sideways.

    Raises :class:`ImageError` for a missing path, a directory, a non-image or unsupported
    file, a truncated or corrupt file, an image above ``max_pixels`` or an unconvertible mode.
    """
    image, p = _open_decoded(path, max_pixels)
    with image:
        return _pil_to_rgb_array(image, f"image {str(p)!r}")


def load_image_for_model(
    path: PathLike, target_length: int = 1024, *, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Read an image file already resized for the model: ``(resized, (H, W))``.

    ``resized`` is (h, w, 3) uint8 RGB with ``max(h, w) == target_length``, (h, w) from
    :func:`preprocess_shape` (rounded half up), resampled with Pillow's
    bilinear filter; it is exactly ``ResizeLongestSide(target_length).apply_image(load_image(path))``.
    ``(H, W)`` is the original size after the EXIF orientation: pass it as ``original_size``
    (e.g. ``predictor.set_torch_image(tensor, (H, W))``).

    The full-resolution image is never materialised as a numpy array: mode conversion and
    resizing happen on the Pillow image and only the resized result is copied out. (JPEG
    ``draft`` decoding is deliberately not used: it would change the pixels.)

    Raises :class:`ImageError` like :func:`load_image`, and for a ``target_length`` that would
    give a zero-sized side (an extremely elongated image).
    """
    if int(target_length) != target_length or target_length < 1:
        raise ImageError(f"target_length must be a positive integer, got {target_length!r}")
    image, p = _open_decoded(path, max_pixels)
    with image:
        width, height = image.size
        new_h, new_w = preprocess_shape(height, width, int(target_length))
        if new_h < 1 or new_w < 1:
            raise ImageError(
                f"image {str(p)!r} ({width} x {height}) is too elongated to resize to long side "
                f"{target_length}: its short side would become 0 pixels; crop or pad it first"
            )
        rgb = _pil_to_rgb_image(image, f"image {str(p)!r}")
        resized = rgb.resize((new_w, new_h), Image.Resampling.BILINEAR)
        if rgb is not image:
            rgb.close()
        with resized:
            return np.array(resized), (height, width)


# --------------------------------------------------------------------------- model input geometry
def preprocess_shape(height: int, width: int, long_side: int) -> Tuple[int, int]:
    """(h, w) after scaling (height, width) so that the long side is ``long_side``, each side
    rounded half up (segment_anything's ``ResizeLongestSide.get_preprocess_shape``)."""
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_longest_side(rgb: np.ndarray, long_side: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8 with the long side ``long_side``, Pillow bilinear
    resampling (what the original code feeds the encoder)."""
    h, w = preprocess_shape(rgb.shape[0], rgb.shape[1], long_side)
    return np.array(Image.fromarray(np.ascontiguousarray(rgb)).resize((w, h), Image.Resampling.BILINEAR))

