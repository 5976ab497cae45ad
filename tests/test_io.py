"""repvit_sam.io: reading images (formats, EXIF, conversions, failures) and atomic PNG writing.

Every file is created here, in tmp_path, with Pillow."""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from repvit_sam.inference.transforms import ResizeLongestSide
from repvit_sam.io import (
    DEFAULT_MAX_PIXELS,
    ImageError,
    load_image,
    load_image_for_model,
    save_png_atomic,
    to_rgb_uint8,
)


def _noise(h: int, w: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    shape = (h, w) if channels == 0 else (h, w, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _smooth(h: int, w: int) -> np.ndarray:
    """A JPEG-friendly image: gradients, so lossy round trips stay close to the source."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], axis=-1).astype(np.uint8)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- formats
@pytest.mark.parametrize(
    "suffix, save_kwargs",
    [(".png", {}), (".tif", {}), (".tiff", {"compression": "tiff_deflate"}), (".bmp", {}), (".webp", {"lossless": True})],
)
def test_lossless_round_trip(tmp_path: Path, suffix: str, save_kwargs: dict) -> None:
    source = _noise(37, 53)
    path = tmp_path / f"img{suffix}"
    Image.fromarray(source).save(path, **save_kwargs)
    loaded = load_image(path)
    assert loaded.shape == (37, 53, 3) and loaded.dtype == np.uint8
    assert loaded.flags.writeable and loaded.flags.c_contiguous
    np.testing.assert_array_equal(loaded, source)
    assert load_image(str(path)).tobytes() == source.tobytes()  # str paths too


def test_large_images_are_copied_in_bands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import repvit_sam.image as rio

    source = _noise(50, 7)
    path = tmp_path / "img.png"
    Image.fromarray(source).save(path)
    monkeypatch.setattr(rio, "_BAND_BYTES", 3 * 7 * 4)  # 4 rows per band, last band 2 rows
    loaded = load_image(path)
    assert loaded.flags.writeable and loaded.flags.c_contiguous
    np.testing.assert_array_equal(loaded, source)
    rgba = Image.fromarray(_noise(9, 7, channels=4))
    np.testing.assert_array_equal(to_rgb_uint8(rgba), np.asarray(rgba)[..., :3])


def test_jpeg_matches_pillow_decode(tmp_path: Path) -> None:
    source = _smooth(48, 64)
    path = tmp_path / "img.jpg"
    Image.fromarray(source).save(path, quality=95)
    loaded = load_image(path)
    with Image.open(path) as ref:
        np.testing.assert_array_equal(loaded, np.asarray(ref.convert("RGB")))
    assert np.abs(loaded.astype(int) - source).mean() < 3  # and it is the picture we saved


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def test_jpeg_exif_orientation_6_is_rotated_clockwise(tmp_path: Path) -> None:
    # Stored 40 rows x 60 columns, a red block at the stored top-left, the rest blue.
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[..., 2] = 255
    stored[:16, :16] = (255, 0, 0)
    path = tmp_path / "portrait.jpg"
    Image.fromarray(stored).save(path, exif=_exif(6), quality=95)

    loaded = load_image(path)
    assert loaded.shape == (60, 40, 3)  # displayed upright: H and W swapped
    with Image.open(path) as raw:
        raw_pixels = np.asarray(raw.convert("RGB"))
    assert raw_pixels.shape == (40, 60, 3)
    np.testing.assert_array_equal(loaded, np.rot90(raw_pixels, k=-1))  # 90 degrees clockwise
    # Orientation 6: the stored top-left corner is displayed at the top-right.
    assert tuple(loaded[4, -5]) == pytest.approx((255, 0, 0), abs=8)
    assert tuple(loaded[4, 4]) == pytest.approx((0, 0, 255), abs=8)

    resized, original = load_image_for_model(path)
    assert original == (60, 40)
    np.testing.assert_array_equal(resized, ResizeLongestSide(1024).apply_image(loaded))


@pytest.mark.parametrize(
    "orientation, reference",
    [
        (1, lambda a: a),
        (2, lambda a: a[:, ::-1]),
        (3, lambda a: a[::-1, ::-1]),
        (4, lambda a: a[::-1]),
        (5, lambda a: a.transpose(1, 0, 2)),
        (6, lambda a: np.rot90(a, k=-1)),
        (7, lambda a: a[::-1, ::-1].transpose(1, 0, 2)),
        (8, lambda a: np.rot90(a, k=1)),
    ],
)
def test_every_exif_orientation_lossless(tmp_path: Path, orientation: int, reference) -> None:
    source = _noise(5, 7, seed=orientation)
    path = tmp_path / f"o{orientation}.png"
    Image.fromarray(source).save(path, exif=_exif(orientation))
    np.testing.assert_array_equal(load_image(path), reference(source))


# --------------------------------------------------------------------------- pixel formats in files
def test_16bit_png_is_scaled_by_shift(tmp_path: Path) -> None:
    values = np.array([[0, 255, 256, 1000], [32768, 40000, 65280, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")  # really a 16-bit file
    loaded = load_image(path)
    expected = np.array([[0, 0, 1, 3], [128, 156, 255, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(loaded, np.repeat(expected[..., None], 3, axis=2))


def test_rgba_png_drops_alpha(tmp_path: Path) -> None:
    rgba = _noise(9, 11, channels=4)
    rgba[0, 0, 3] = 0  # fully transparent pixel keeps its stored colour
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba).save(path)
    np.testing.assert_array_equal(load_image(path), rgba[..., :3])


def test_grayscale_png_is_replicated(tmp_path: Path) -> None:
    gray = _noise(6, 10, channels=0)
    path = tmp_path / "gray.png"
    Image.fromarray(gray).save(path)
    loaded = load_image(path)
    assert loaded.shape == (6, 10, 3)
    for c in range(3):
        np.testing.assert_array_equal(loaded[..., c], gray)


def test_gray_alpha_png(tmp_path: Path) -> None:
    la = _noise(6, 5, channels=2)
    path = tmp_path / "la.png"
    Image.merge("LA", [Image.fromarray(la[..., 0]), Image.fromarray(la[..., 1])]).save(path)
    np.testing.assert_array_equal(load_image(path), np.repeat(la[..., :1], 3, axis=2))


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [10, 20, 30]], dtype=np.uint8)
    indices = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], dtype=np.uint8)
    im = Image.frombytes("P", (4, 2), indices.tobytes())
    im.putpalette(palette.reshape(-1).tolist())
    path = tmp_path / "pal.png"
    im.save(path, transparency=bytes([0, 255, 255, 128]))
    with Image.open(path) as raw:
        assert raw.mode == "P"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Pillow palette-transparency warning either
        loaded = load_image(path)
    np.testing.assert_array_equal(loaded, palette[indices])


def test_bilevel_png_is_0_or_255(tmp_path: Path) -> None:
    bits = np.array([[True, False, True], [False, False, True]])
    path = tmp_path / "bits.png"
    Image.fromarray(bits).convert("1").save(path)
    with Image.open(path) as raw:
        assert raw.mode == "1"
    np.testing.assert_array_equal(load_image(path)[..., 0], bits.astype(np.uint8) * 255)


def test_cmyk_tiff_converted_like_pillow(tmp_path: Path) -> None:
    cmyk = Image.frombytes("CMYK", (5, 4), _noise(4, 5, channels=4).tobytes())
    path = tmp_path / "cmyk.tif"
    cmyk.save(path)
    loaded = load_image(path)
    np.testing.assert_array_equal(loaded, np.asarray(cmyk.convert("RGB")))


# --------------------------------------------------------------------------- failures
@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_file_fails_clearly(tmp_path: Path, suffix: str) -> None:
    full = tmp_path / f"full{suffix}"
    Image.fromarray(_noise(96, 96)).save(full)
    data = full.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as exc:
        load_image(cut)
    message = _one_line(exc)
    assert str(cut) in message and "truncated or corrupt" in message
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image_for_model(cut)


def test_text_file_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("hello, I am not a picture\n")
    with pytest.raises(ImageError) as exc:
        load_image(path)
    message = _one_line(exc)
    assert str(path) in message and "not a readable image" in message and "PNG" in message


def test_unsupported_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    Image.fromarray(_noise(4, 4)).save(path)
    with pytest.raises(ImageError, match="not a readable image.*JPEG, PNG, TIFF, WEBP, BMP"):
        load_image(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not found") as exc:
        load_image(tmp_path / "nope.png")
    assert "nope.png" in _one_line(exc)
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)


def test_max_pixels_refuses_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.fromarray(_noise(30, 40)).save(path)
    with pytest.raises(ImageError) as exc:
        load_image(path, max_pixels=1199)
    message = _one_line(exc)
    assert "1,200 pixels" in message and "40 x 30" in message and "1,199" in message
    assert "max_pixels" in message and str(path) in message
    assert load_image(path, max_pixels=1200).shape == (30, 40, 3)  # the limit is inclusive
    assert load_image(path, max_pixels=None).shape == (30, 40, 3)
    # Checked from the header alone: a truncated body gives the size error, not a decode error.
    cut = tmp_path / "cut.png"
    cut.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ImageError, match="more than the limit of 1,199"):
        load_image(cut, max_pixels=1199)
    with pytest.raises(ImageError, match="more than the limit"):
        load_image_for_model(path, max_pixels=100)
    assert DEFAULT_MAX_PIXELS == 2 * 89_478_485


def test_pillow_global_bomb_limit_becomes_image_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "img.png"
    Image.fromarray(_noise(20, 20)).save(path)  # 400 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 150)  # Pillow errors above 300
    with pytest.raises(ImageError, match="MAX_IMAGE_PIXELS") as exc:
        load_image(path, max_pixels=None)
    assert str(path) in _one_line(exc)
    # Pillow's warning tier (between its limit and twice it) is not an error and stays silent.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(path).shape == (20, 20, 3)


def test_bad_arguments(tmp_path: Path) -> None:
    path = tmp_path / "img.png"
    Image.fromarray(_noise(4, 4)).save(path)
    with pytest.raises(ImageError, match="max_pixels"):
        load_image(path, max_pixels=0)
    with pytest.raises(ImageError, match="target_length"):
        load_image_for_model(path, 0)


# --------------------------------------------------------------------------- to_rgb_uint8
def test_float_arrays_in_range() -> None:
    values = np.array([[0.0, 0.2, 0.5], [1 / 255, 254.5 / 255, 1.0]])
    expected = np.array([[0, 51, 128], [1, 255, 255]], dtype=np.uint8)
    for dtype in (np.float64, np.float32):
        out = to_rgb_uint8(values.astype(dtype))
        assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
        np.testing.assert_array_equal(out[..., 1], expected)
    np.testing.assert_array_equal(to_rgb_uint8(np.array([[0.0, 0.5, 1.0]], np.float16))[0, :, 0], [0, 128, 255])
    rgb = np.random.default_rng(1).random((4, 5, 3))
    np.testing.assert_array_equal(to_rgb_uint8(rgb), np.floor(rgb * 255 + 0.5).astype(np.uint8))


@pytest.mark.parametrize(
    "values, pattern",
    [
        (np.array([[0.0, 1.5]]), r"values in \[0, 1.5\].*\[0, 1\]"),
        (np.array([[-0.25, 0.5]]), r"values in \[-0.25, 0.5\]"),
        (np.array([[0.0, 255.0]]), r"divide by the maximum"),
        (np.array([[0.0, np.nan]]), "NaN or infinite"),
        (np.array([[0.0, np.inf]]), "NaN or infinite"),
    ],
)
def test_float_arrays_out_of_range_are_refused(values: np.ndarray, pattern: str) -> None:
    with pytest.raises(ImageError, match=pattern):
        to_rgb_uint8(values)


def test_integer_bool_and_channel_rules() -> None:
    deep = np.array([[0, 255, 256, 65535]], dtype=np.uint16)
    np.testing.assert_array_equal(to_rgb_uint8(deep)[0, :, 2], [0, 0, 1, 255])
    np.testing.assert_array_equal(to_rgb_uint8(deep.astype(">u2"))[0, :, 0], [0, 0, 1, 255])
    np.testing.assert_array_equal(to_rgb_uint8(np.array([[True, False]]))[0], [[255] * 3, [0] * 3])
    gray1 = _noise(3, 4, channels=1)
    np.testing.assert_array_equal(to_rgb_uint8(gray1), np.repeat(gray1, 3, axis=2))
    rgba = _noise(3, 4, channels=4)
    np.testing.assert_array_equal(to_rgb_uint8(rgba), rgba[..., :3])
    assert to_rgb_uint8(rgba).flags.c_contiguous
    rgb = _noise(3, 4)
    assert to_rgb_uint8(rgb) is rgb  # already right: no copy
    flipped = rgb[:, ::-1]
    out = to_rgb_uint8(flipped)
    assert out.flags.c_contiguous and not np.shares_memory(out, rgb)
    np.testing.assert_array_equal(out, flipped)


@pytest.mark.parametrize(
    "array, pattern",
    [
        (np.zeros((2, 3, 4, 3), np.uint8), r"shape \(2, 3, 4, 3\)"),
        (np.zeros((3, 4, 2), np.uint8), r"shape \(3, 4, 2\)"),
        (np.zeros((3, 4, 5), np.uint8), r"shape \(3, 4, 5\)"),
        (np.zeros((7,), np.uint8), r"shape \(7,\)"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
        (np.zeros((3, 4, 3), np.complex64), "dtype complex64"),
        (np.zeros((3, 4, 3), np.int64), "dtype int64.*convert it to uint8"),
        (np.zeros((3, 4), np.uint32), "dtype uint32"),
    ],
)
def test_unsupported_arrays_are_refused(array: np.ndarray, pattern: str) -> None:
    with pytest.raises(ImageError, match=pattern) as exc:
        to_rgb_uint8(array)
    _one_line(exc)


def test_non_arrays_are_refused() -> None:
    with pytest.raises(ImageError, match="got list"):
        to_rgb_uint8([[1, 2, 3]])  # type: ignore[arg-type]


def test_pil_modes() -> None:
    rgb = Image.fromarray(_smooth(6, 8))
    for mode in ("LAB", "HSV", "YCbCr", "CMYK", "RGBA", "L", "P"):
        converted = rgb.convert(mode)
        np.testing.assert_array_equal(to_rgb_uint8(converted), np.asarray(converted.convert("RGB")))
    out = to_rgb_uint8(rgb)
    np.testing.assert_array_equal(out, _smooth(6, 8))
    assert out.flags.writeable
    ints = Image.fromarray(np.array([[0, 256, 65535]], dtype=np.int32))
    assert ints.mode == "I"
    np.testing.assert_array_equal(to_rgb_uint8(ints)[0, :, 0], [0, 1, 255])
    with pytest.raises(ImageError, match=r"values in \[-1, 70000\]"):
        to_rgb_uint8(Image.fromarray(np.array([[-1, 70000]], dtype=np.int32)))
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert floats.mode == "F"
    np.testing.assert_array_equal(to_rgb_uint8(floats)[0, :, 0], [0, 128, 255])
    with pytest.raises(ImageError, match=r"\[0, 2\]"):
        to_rgb_uint8(Image.fromarray(np.array([[0.0, 2.0]], dtype=np.float32)))


# --------------------------------------------------------------------------- load_image_for_model
@pytest.mark.parametrize("h, w", [(769, 770), (3, 500), (500, 3), (1300, 900), (1024, 600), (40, 30)])
def test_load_image_for_model_equals_resize_of_load_image(tmp_path: Path, h: int, w: int) -> None:
    path = tmp_path / "img.png"
    Image.fromarray(_noise(h, w, seed=h + w)).save(path)
    resized, original = load_image_for_model(path)
    full = load_image(path)
    expected = ResizeLongestSide(1024).apply_image(full)
    assert original == (h, w)
    assert resized.shape == (*ResizeLongestSide.get_preprocess_shape(h, w, 1024), 3)
    assert max(resized.shape[:2]) == 1024 and resized.dtype == np.uint8
    np.testing.assert_array_equal(resized, expected)


@pytest.mark.parametrize("kind", ["jpeg", "rgba", "gray16", "palette"])
def test_load_image_for_model_conversions_match(tmp_path: Path, kind: str) -> None:
    if kind == "jpeg":
        path = tmp_path / "img.jpg"
        Image.fromarray(_smooth(333, 517)).save(path, exif=_exif(8))
    elif kind == "rgba":
        path = tmp_path / "img.png"
        Image.fromarray(_noise(333, 517, channels=4)).save(path)
    elif kind == "gray16":
        path = tmp_path / "img.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 65536, (333, 517), dtype=np.uint16)).save(path)
    else:
        path = tmp_path / "img.png"
        Image.fromarray(_smooth(333, 517)).convert("P").save(path)
    full = load_image(path)
    resized, original = load_image_for_model(path, 256)
    assert original == full.shape[:2]
    np.testing.assert_array_equal(resized, ResizeLongestSide(256).apply_image(full))
    assert max(resized.shape[:2]) == 256


def test_load_image_for_model_too_elongated(tmp_path: Path) -> None:
    path = tmp_path / "line.png"
    Image.fromarray(_noise(1, 3000)).save(path)
    with pytest.raises(ImageError, match="too elongated"):
        load_image_for_model(path)


# --------------------------------------------------------------------------- save_png_atomic
def test_save_png_atomic_writes_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    first = _noise(5, 6, seed=1)
    save_png_atomic(first, path)
    np.testing.assert_array_equal(load_image(path), first)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()

    os.chmod(path, 0o640)
    second = _noise(7, 3, seed=2)
    save_png_atomic(Image.fromarray(second), path)
    np.testing.assert_array_equal(load_image(path), second)  # replaced, new size too
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # permissions kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # no temp files left


def test_save_png_atomic_modes(tmp_path: Path) -> None:
    mask = np.array([[True, False], [False, True]])
    save_png_atomic(mask, tmp_path / "mask.png")
    with Image.open(tmp_path / "mask.png") as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), mask.astype(np.uint8) * 255)
    deep = np.array([[0, 65535]], dtype=np.uint16)
    save_png_atomic(deep, tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as im:
        np.testing.assert_array_equal(np.asarray(im).astype(np.int64), deep)
    rgba = _noise(2, 3, channels=4)
    save_png_atomic(rgba, tmp_path / "rgba.png")
    with Image.open(tmp_path / "rgba.png") as im:
        assert im.mode == "RGBA"
        np.testing.assert_array_equal(np.asarray(im), rgba)
    save_png_atomic(np.array([[0.0, 1.0]]), tmp_path / "float.png")  # via to_rgb_uint8
    np.testing.assert_array_equal(load_image(tmp_path / "float.png")[0, :, 0], [0, 255])
    cmyk = Image.frombytes("CMYK", (2, 2), _noise(2, 2, channels=4).tobytes())
    save_png_atomic(cmyk, tmp_path / "cmyk.png")
    np.testing.assert_array_equal(load_image(tmp_path / "cmyk.png"), np.asarray(cmyk.convert("RGB")))


def test_save_png_atomic_failure_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out.png"
    old = _noise(4, 4, seed=3)
    save_png_atomic(old, path)
    before = path.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        save_png_atomic(_noise(4, 4, seed=4), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    with pytest.raises(ImageError, match="complex"):
        save_png_atomic(np.zeros((2, 2, 3), np.complex64), path)
    assert path.read_bytes() == before
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_png_atomic(old, tmp_path / "missing_dir" / "x.png")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
