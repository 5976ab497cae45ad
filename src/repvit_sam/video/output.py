"""Writing tracking results: DAVIS palette PNGs, an overlay video, per-frame RLE JSON records.

Every file is written atomically (a temporary file in the same folder, moved into place when
complete), so an interrupted run leaves earlier files intact and no half-written ones.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..synthetic import box_xywh, davis_palette

# container suffix -> codecs to try, best first
VIDEO_CODECS = {
    ".mp4": ("libx264", "h264", "mpeg4"),
    ".mov": ("libx264", "h264", "mpeg4"),
    ".mkv": ("libx264", "h264", "mpeg4"),
    ".m4v": ("libx264", "h264", "mpeg4"),
    ".webm": ("libvpx-vp9", "libvpx"),
    ".avi": ("mpeg4", "mjpeg"),
}


def palette_colors() -> np.ndarray:
    """(256, 3) uint8: the DAVIS palette, colour i for object i."""
    return np.array(davis_palette(), dtype=np.uint8).reshape(256, 3)


def save_label_png(labels: np.ndarray, path: Path) -> None:
    """An (H, W) uint8 label image as a DAVIS palette PNG (index = object id), atomically."""
    from PIL import Image

    from ..io import save_png_atomic

    png = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8), mode="P")
    png.putpalette(davis_palette())
    save_png_atomic(png, path)


def mask_entry(mask: np.ndarray, score: float) -> Dict[str, Any]:
    """JSON record of one object on one frame: COCO RLE, area, XYWH box (segment-anything's
    convention: x_max - x_min), predicted IoU."""
    from ..inference.masks import mask_to_rle

    return {"segmentation": mask_to_rle(mask), "area": int(np.count_nonzero(mask)), "bbox": box_xywh(mask),
            "score": round(float(score), 5)}


class VideoWriter:
    """Frames -> a video file with PyAV: H.264 for mp4/mov/mkv, VP9 for webm, MPEG-4 for avi
    (each falling back to what the installed FFmpeg has). Odd sizes are padded by one pixel
    (yuv420p needs even sizes). Use as a context manager: the file appears, complete, on a
    clean exit; after an error it is not written (an existing file is kept)."""

    def __init__(self, path: Path, fps: float, size: Tuple[int, int]) -> None:
        from .frames import _import_av

        self.av = _import_av()
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_CODECS:
            raise ValueError(f"overlay video {self.path}: use one of {', '.join(VIDEO_CODECS)}")
        self.fps = float(fps)
        self.size = size
        self._tmp: Optional[str] = None
        self._container: Any = None
        self._stream: Any = None
        self._codecs = VIDEO_CODECS[suffix]

    def __enter__(self) -> "VideoWriter":
        from fractions import Fraction

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=self.path.suffix, dir=self.path.parent)
        os.close(fd)
        self._container = self.av.open(self._tmp, mode="w")
        h, w = self.size
        rate = Fraction(self.fps).limit_denominator(1001)
        last: Optional[Exception] = None
        for codec in self._codecs:
            try:
                stream = self._container.add_stream(codec, rate=rate)
                break
            except Exception as e:  # codec not in this FFmpeg build
                last = e
        else:
            self._abort()
            raise RuntimeError(f"no encoder for {self.path.suffix} in this FFmpeg build ({last})")
        stream.width, stream.height = w + w % 2, h + h % 2
        stream.pix_fmt = "yuv420p"
        if stream.codec_context.name in ("libx264", "h264"):
            stream.options = {"crf": "20", "preset": "veryfast"}
        self._stream = stream
        return self

    def write(self, frame: np.ndarray) -> None:
        """Append an (H, W, 3) uint8 RGB frame."""
        h, w = self.size
        if frame.shape[:2] != (h, w):
            raise ValueError(f"frame is {frame.shape[1]}x{frame.shape[0]}, the video {w}x{h}")
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        vf = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in self._stream.encode(vf):
            self._container.mux(packet)

    def _abort(self) -> None:
        with contextlib.suppress(Exception):
            if self._container is not None:
                self._container.close()
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
        self._tmp = None

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._abort()
            return
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        except BaseException:
            self._abort()
            raise
        assert self._tmp is not None
        os.replace(self._tmp, self.path)
        self._tmp = None


def overlay_frame(frame: np.ndarray, masks: Dict[int, np.ndarray], points: Optional[Dict[int, Tuple[np.ndarray, np.ndarray]]] = None) -> np.ndarray:
    """(H, W, 3) uint8: ``frame`` with each object's mask tinted in its DAVIS colour and, if
    given, its visible tracked points (positive green, negative red)."""
    from ..visualize import overlay

    ids = sorted(masks)
    colors = palette_colors()
    pts = lab = None
    if points:
        pts = np.concatenate([p for p, _ in points.values()]) if points else None
        lab = np.concatenate([l for _, l in points.values()]) if points else None
        if pts is not None and len(pts) == 0:
            pts = lab = None
    image = overlay(frame, [masks[i] for i in ids], points=pts, labels=lab, colors=colors[[i % 256 for i in ids]] if ids else None)
    return np.asarray(image)

