"""Frame sources: a folder of images, a video file or a list of arrays, read one frame at a time.

Every source is a sequence of (H, W, 3) uint8 RGB frames of one size, indexed 0..len-1:

    src = open_frames("clip.mp4")            # or a folder, or [array, array, ...]
    len(src), src.size                       # frame count, (H, W)
    for i, frame in src.frames(0, len(src)):            # forward, one frame decoded at a time
    for i, frame in src.frames(len(src) - 1, -1, -1):   # backward

Nothing holds the whole video: a folder reads one file per frame; a video file is decoded by
PyAV (the ``video`` extra) one frame at a time going forward, and going backward in chunks of
``BACKWARD_CHUNK`` frames (seek to the keyframe before the chunk, decode the chunk, yield it
reversed). Frame indices of a video file follow presentation order: a demux-only pass at open
collects the packets' timestamps (cheap, nothing is decoded), which also gives the frame count
and frame-accurate seeking.

Bad input raises :class:`FrameError` with one line naming the file and frame: an unreadable
or missing video, a folder without images, a frame that cannot be decoded, a frame whose size
differs from the first one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ogv", ".gif")
BACKWARD_CHUNK = 16  # frames decoded at once when a video file is read backward
VIDEO_EXTRA = "pip install 'repvit-sam[video]'"

Frame = np.ndarray  # (H, W, 3) uint8 RGB
FramesLike = Union[str, os.PathLike, Sequence[np.ndarray], "FrameSource"]


class FrameError(ValueError):
    """A video or frame that cannot be used (one line: what was wrong and what to do)."""


def _natural_key(name: str) -> List[object]:
    """'frame10.png' after 'frame9.png': digit runs compare as numbers."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


class FrameSource:
    """A sequence of same-size RGB frames, streamed. Subclasses implement ``__len__``,
    ``_read(i)`` (random access) and may override ``frames`` with a faster sequential path."""

    name: str = "frames"

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def size(self) -> Tuple[int, int]:
        """(H, W) of every frame."""
        raise NotImplementedError

    @property
    def fps(self) -> Optional[float]:
        """Frames per second where the source knows it (video files), else None."""
        return None

    def _read(self, index: int) -> Frame:
        raise NotImplementedError

    def _check_index(self, index: int) -> int:
        n = len(self)
        if not isinstance(index, (int, np.integer)) or not 0 <= int(index) < n:
            raise IndexError(f"frame {index} is out of range: {self.name} has {n} frames (0..{n - 1})")
        return int(index)

    def __getitem__(self, index: int) -> Frame:
        return self._read(self._check_index(index))

    def _check_size(self, frame: Frame, index: int) -> Frame:
        if frame.shape[:2] != self.size:
            h, w = frame.shape[:2]
            raise FrameError(
                f"frame {index} of {self.name} is {w}x{h} but the first frame is {self.size[1]}x{self.size[0]}: "
                "every frame of a video must have the same size"
            )
        return frame

    def frames(self, start: int, stop: int, step: int = 1) -> Iterator[Tuple[int, Frame]]:
        """Yield (index, frame) for ``range(start, stop, step)``, ``step`` = 1 or -1."""
        if step not in (1, -1):
            raise ValueError(f"step must be 1 or -1, got {step}")
        for i in range(start, stop, step):
            yield i, self[i]


class ArrayFrames(FrameSource):
    """Frames given as arrays (anything :func:`repvit_sam.io.to_rgb_uint8` accepts)."""

    def __init__(self, arrays: Sequence[np.ndarray], name: str = "the frame list") -> None:
        if len(arrays) == 0:
            raise FrameError("the frame list is empty: give at least one frame")
        self._arrays = arrays
        self.name = name
        self._size = self._convert(0).shape[:2]

    def __len__(self) -> int:
        return len(self._arrays)

    @property
    def size(self) -> Tuple[int, int]:
        return self._size

    def _convert(self, index: int) -> Frame:
        from ..io import to_rgb_uint8

        try:
            return to_rgb_uint8(self._arrays[index])
        except (TypeError, ValueError) as e:
            raise FrameError(f"frame {index} of {self.name}: {e}") from None

    def _read(self, index: int) -> Frame:
        return self._check_size(self._convert(index), index)


class FolderFrames(FrameSource):
    """Image files in a folder (JPEG, PNG, BMP, TIFF, WebP), in natural name order."""

    def __init__(self, folder: Union[str, os.PathLike]) -> None:
        folder = Path(folder)
        self.name = str(folder)
        self.files = sorted(
            (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")),
            key=lambda p: _natural_key(p.name),
        )
        if not self.files:
            raise FrameError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in folder {folder}")
        self._size = self._load(0).shape[:2]

    def __len__(self) -> int:
        return len(self.files)

    @property
    def size(self) -> Tuple[int, int]:
        return self._size

    def _load(self, index: int) -> Frame:
        from ..io import load_image

        try:
            return load_image(self.files[index])
        except (OSError, ValueError) as e:
            raise FrameError(f"frame {index} ({self.files[index].name}) of {self.name}: {e}") from None

    def _read(self, index: int) -> Frame:
        return self._check_size(self._load(index), index)


def _import_av():
    try:
        import av
    except ImportError:
        raise ImportError(f"reading and writing video files needs PyAV: {VIDEO_EXTRA}") from None
    return av


def _av_errors(av) -> Tuple[type, ...]:
    base = getattr(getattr(av, "error", None), "FFmpegError", None) or getattr(av, "AVError", None) or OSError
    return (base, OSError, EOFError)


class VideoFileFrames(FrameSource):
    """A video file decoded by PyAV (mp4, webm, avi, mov, mkv, ...): the first video stream."""

    def __init__(self, path: Union[str, os.PathLike]) -> None:
        av = _import_av()
        self._av = av
        self.path = Path(path)
        self.name = str(self.path)
        errors = _av_errors(av)
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise FrameError(f"{self.path} has no video stream")
                stream = container.streams.video[0]
                self._time_base = stream.time_base
                rate = stream.average_rate or stream.guessed_rate
                self._fps = float(rate) if rate else None
                pts = [p.pts for p in container.demux(stream) if p.size > 0]
                self._size = (int(stream.codec_context.height), int(stream.codec_context.width))
        except FrameError:
            raise
        except errors as e:
            raise FrameError(f"cannot read video {self.path}: {_one_line(e)}") from None
        if not pts:
            raise FrameError(f"video {self.path} has no frames")
        # Presentation order; without timestamps (some raw streams) frames are counted in decode order.
        self._pts: Optional[List[int]] = sorted(pts) if all(p is not None for p in pts) else None
        self._count = len(pts)
        if self._size[0] <= 0 or self._size[1] <= 0:  # containers that only know the size after decoding
            first = next(self._decode_from(0))
            self._size = first.shape[:2]

    def __len__(self) -> int:
        return self._count

    @property
    def size(self) -> Tuple[int, int]:
        return self._size

    @property
    def fps(self) -> Optional[float]:
        return self._fps

    def _decode_from(self, start: int) -> Iterator[Frame]:
        """Frames start, start+1, ... decoded in order (a seek to the keyframe before ``start``)."""
        av = self._av
        errors = _av_errors(av)
        index = start
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                skip = 0
                if start > 0 and self._pts is not None:
                    container.seek(self._pts[start], stream=stream, backward=True, any_frame=False)
                    target = self._pts[start]
                else:
                    target = None
                    skip = start  # no timestamps: decode from the start and count
                for frame in container.decode(stream):
                    if target is not None and frame.pts is not None and frame.pts < target:
                        continue
                    if skip:
                        skip -= 1
                        continue
                    if index >= self._count:
                        return
                    rgb = frame.to_ndarray(format="rgb24")
                    yield self._check_size(rgb, index)
                    index += 1
        except FrameError:
            raise
        except errors as e:
            raise FrameError(f"frame {index} of {self.path} cannot be decoded: {_one_line(e)}") from None
        if index < self._count:
            raise FrameError(f"{self.path} ended after {index} of {self._count} frames: the file is truncated or corrupt")

    def _read(self, index: int) -> Frame:
        for frame in self._decode_from(index):
            return frame
        raise FrameError(f"frame {index} of {self.path} cannot be decoded")

    def frames(self, start: int, stop: int, step: int = 1) -> Iterator[Tuple[int, Frame]]:
        if step not in (1, -1):
            raise ValueError(f"step must be 1 or -1, got {step}")
        if step == 1:
            if start >= stop:
                return
            self._check_index(start)
            for i, frame in enumerate(self._decode_from(start), start):
                if i >= stop:
                    return
                yield i, frame
            return
        hi = start
        while hi > stop:  # chunks [lo, hi], decoded forward, yielded backward
            lo = max(stop + 1, hi - BACKWARD_CHUNK + 1)
            chunk = [f for _, f in zip(range(lo, hi + 1), self._decode_from(lo))]
            if len(chunk) != hi - lo + 1:
                raise FrameError(f"frame {lo + len(chunk)} of {self.path} cannot be decoded")
            for i in range(hi, lo - 1, -1):
                yield i, chunk[i - lo]
            hi = lo - 1


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def open_frames(source: FramesLike) -> FrameSource:
    """A :class:`FrameSource` for a folder of images, a video file, a list of arrays (or a
    source, returned as is). Raises :class:`FrameError` (one line) when it cannot be used."""
    if isinstance(source, FrameSource):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return FolderFrames(path)
        if not path.exists():
            raise FrameError(f"video not found: {path} (give a video file or a folder of frames)")
        if path.suffix.lower() in IMAGE_SUFFIXES:
            raise FrameError(f"{path} is one image, not a video: give a video file or a folder of frames")
        return VideoFileFrames(path)
    if isinstance(source, np.ndarray) and source.ndim == 4:
        return ArrayFrames(list(source))
    if isinstance(source, (list, tuple)):
        return ArrayFrames(source)
    raise FrameError(f"cannot read frames from {type(source).__name__}: give a folder, a video file or a list of (H, W, 3) arrays")
