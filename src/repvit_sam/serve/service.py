"""The model side of the web demo, without any HTTP: decode uploads, embed each image once
(cached by content hash), decode prompts, segment everything with progress.

Every model call holds one lock (``model_lock``): on a CPU, torch already spreads one forward
pass over all cores, so concurrent passes would only compete for them; holding the lock keeps
latency predictable and makes no assumption about re-entrancy of the modules. No call reads
shared mutable state: the embedding, sizes and prompts of a request travel with it. Everything else
(decoding uploads, hashing, RLE encoding, NMS) runs outside the lock, in parallel.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..inference.amg import SamAutomaticMaskGenerator
from ..inference.masks import mask_to_rle
from ..inference.predictor import ImageEmbedding, SamPredictor
from ..io import SUPPORTED_FORMATS, ImageError, load_image
from ..modeling.sam import Sam
from .cache import LRUCache


class UploadError(ValueError):
    """An upload that is not an acceptable image; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def decode_upload(data: bytes, max_pixels: int, filename: Optional[str] = None) -> np.ndarray:
    """Uploaded bytes -> (H, W, 3) uint8 RGB, by decoding them (the name is never trusted).

    413 for more than ``max_pixels`` pixels (read from the header, before decoding: a
    decompression bomb is never expanded); 415 for an empty, unknown, unsupported, truncated
    or corrupt file. Decoding itself is :func:`repvit_sam.io.load_image`'s (EXIF orientation,
    pixel-format rules), run on a private temporary copy.
    """
    from PIL import Image, UnidentifiedImageError

    label = "the uploaded file" if not filename else f"the uploaded file {filename[:80]!r}"
    if not data:
        raise UploadError(415, f"{label} is empty; upload a JPEG, PNG, TIFF, WebP or BMP image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=list(SUPPORTED_FORMATS)) as probe:
                width, height = probe.size
    except Image.DecompressionBombError:
        raise UploadError(413, f"{label} has too many pixels (decompression-bomb protection); upload a smaller image") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        kind = "is not an image" if isinstance(exc, UnidentifiedImageError) else "could not be read as an image"
        raise UploadError(
            415, f"{label} {kind} in a supported format ({', '.join(SUPPORTED_FORMATS)}); upload a JPEG or PNG"
        ) from None
    if width * height > max_pixels:
        raise UploadError(
            413,
            f"{label} is {width} x {height} = {width * height:,} pixels, more than this server's limit of "
            f"{max_pixels:,}; downscale it (or start the server with a larger --max-pixels)",
        )
    with tempfile.TemporaryDirectory(prefix="repvit-sam-upload-") as tmp:
        path = os.path.join(tmp, "upload")
        with open(path, "wb") as f:
            f.write(data)
        try:
            return load_image(path, max_pixels=max_pixels)
        except ImageError as exc:
            message = str(exc).replace(repr(path), label).replace(path, label)
            raise UploadError(415, message) from None


def content_id(image: np.ndarray) -> str:
    """A content hash of the pixels (and size): equal pictures get equal ids, whatever the file."""
    h = hashlib.sha256()
    h.update(f"{image.shape[0]}x{image.shape[1]}x{image.shape[2]}|".encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()[:32]


@dataclass
class Progress:
    state: str = "idle"  # idle | running | done | failed
    done: int = 0
    total: int = 0


@dataclass
class ImageEntry:
    """An embedded image: everything a prompt needs, not the pixels."""

    image_id: str
    embedding: ImageEmbedding
    everything_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    progress: Progress = field(default_factory=Progress)

    @property
    def height(self) -> int:
        return int(self.embedding.original_size[0])

    @property
    def width(self) -> int:
        return int(self.embedding.original_size[1])


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


class _EmbeddedPredictor(SamPredictor):
    """A predictor whose image is an entry's cached embedding (for the mask generator), taking
    the model lock around each decoder call."""

    def __init__(self, model: Sam, entry: ImageEntry, lock: Any) -> None:
        super().__init__(model)
        self._entry = entry
        self._lock = lock

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        e = self._entry
        if tuple(image.shape[:2]) != (e.height, e.width):  # crops would need their own embedding
            raise RuntimeError("the server's mask generator works on the whole image only (crop_n_layers=0)")
        self.set_embedding(e.embedding.features, e.embedding.original_size, e.embedding.input_size)

    def predict_torch(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        with self._lock:
            return super().predict_torch(*args, **kwargs)


class _EmbeddedGenerator(SamAutomaticMaskGenerator):
    """The automatic mask generator on a cached embedding, taking the model lock around each
    decoder pass (the fast path's ``decode_lock``; the predictor's ``predict_torch`` for the
    reference path)."""

    def __init__(self, model: Sam, entry: ImageEntry, lock: Any, **kwargs: Any) -> None:
        super().__init__(model, crop_n_layers=0, output_mode="coco_rle", predictor=_EmbeddedPredictor(model, entry, lock), **kwargs)
        self.decode_lock = lock


def _finite(value: float) -> float:
    value = float(value)
    return value if math.isfinite(value) else 0.0


class SegmentationService:
    """One model, a cache of embedded images, and the three operations of the demo."""

    def __init__(
        self, model: Sam, *, backend: Optional[str] = None, cache_size: int = 16, serialize_model: bool = True
    ) -> None:
        """``serialize_model=False`` drops the model lock (concurrent forward passes; for
        measurements: see docs/serve.md)."""
        self.model = model.eval()
        self.predictor = SamPredictor(model, backend=backend)
        self.backend = backend
        self.cache: LRUCache[str, ImageEntry] = LRUCache(cache_size)
        self.model_lock: Any = threading.Lock() if serialize_model else _NoLock()
        self.encoder_calls = 0  # images embedded so far (the cache's misses, counted at the model)

    # ------------------------------------------------------------------ images
    def add_image(self, image: np.ndarray) -> Tuple[ImageEntry, bool]:
        """Embed ``image`` unless an equal one is cached; returns (entry, newly embedded)."""
        image_id = content_id(image)
        return self.cache.get_or_compute(image_id, lambda: self._embed(image_id, image))

    def _embed(self, image_id: str, image: np.ndarray) -> ImageEntry:
        # No predictor state is touched: the embedding goes straight into the entry, so model
        # calls are functions of their arguments (the lock is about cores, not correctness).
        with self.model_lock, torch.inference_mode():
            emb = self.predictor.embed(image)
            self.encoder_calls += 1
        return ImageEntry(image_id, emb)

    def get(self, image_id: str) -> Optional[ImageEntry]:
        return self.cache.get(image_id)

    def delete(self, image_id: str) -> bool:
        return self.cache.pop(image_id) is not None

    # ------------------------------------------------------------------ prompts
    def predict(
        self,
        entry: ImageEntry,
        points: Sequence[Sequence[float]],
        box: Optional[Sequence[float]],
        multimask: bool,
    ) -> Tuple[List[Dict[str, Any]], List[float]]:
        """Masks (COCO RLE, original-image pixels) and scores for one prompt group; decoder only.

        Raises :class:`repvit_sam.inference.prompts.PromptError` for prompts outside the image.
        """
        coords = labels = None
        if points:
            arr = np.asarray(points, dtype=np.float64)
            coords, labels = arr[:, :2], arr[:, 2].astype(np.int64)
        box_arr = None if box is None else np.asarray(box, dtype=np.float64)
        with self.model_lock, torch.inference_mode():
            masks, scores, _ = self.predictor.predict_on(entry.embedding, coords, labels, box_arr, None, multimask, False)
        return [mask_to_rle(m) for m in masks], [_finite(s) for s in scores]

    def everything(
        self, entry: ImageEntry, *, points_per_side: int = 16, points_per_batch: int = 64, **options: Any
    ) -> List[Dict[str, Any]]:
        """SamAutomaticMaskGenerator's records (COCO RLE) for the whole image, on the cached
        embedding; ``options`` are the generator's (thresholds, ``min_mask_region_area``);
        ``entry.progress`` counts the decoded point batches. Largest masks first."""
        n_batches = math.ceil(points_per_side**2 / points_per_batch)
        with entry.everything_lock:
            progress = entry.progress
            progress.state, progress.done, progress.total = "running", 0, n_batches

            def on_points(done: int, total: int) -> None:  # as batches of points_per_batch points
                progress.done = min(n_batches, math.ceil(done / points_per_batch))

            try:
                generator = _EmbeddedGenerator(
                    self.model, entry, self.model_lock,
                    points_per_side=points_per_side, points_per_batch=points_per_batch, **options,
                )
                # The generator only reads the image's size here (the embedding is cached);
                # np.zeros pages are never touched, so this costs no memory.
                placeholder = np.zeros((entry.height, entry.width, 3), dtype=np.uint8)
                with torch.inference_mode():
                    records = generator.generate(placeholder, progress=on_points)
            except BaseException:
                progress.state = "failed"
                raise
            progress.state = "done"
        records.sort(key=lambda r: -r["area"])
        return records
