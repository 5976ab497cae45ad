"""The on-device runtimes as image-encoder backends (:mod:`repvit_sam.backends`): ``executorch``,
``executorch-int8``, ``litert`` and ``litert-int8``. The fused encoder is exported for a fixed
input (H, W) the first time that size is seen (``.pte`` lowered to XNNPACK, or ``.tflite``
through litert-torch; int8 through PT2E, calibrated), kept in ``cache_dir`` under a name made of
its weights, input shape, runtime and calibration set, and run one image at a time on the
runtime's XNNPACK kernels: what a phone runs, measured here.

int8 calibration (when ``calibration`` is not given): scikit-image's sample photos, prepared as
the predictor prepares images; without scikit-image, ``backends.calibration_images``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

Runner = Callable[[np.ndarray], np.ndarray]

SUFFIX = {"executorch": ".pte", "litert": ".tflite"}


def _photo_calibration(size: Tuple[int, int], count: int) -> List[np.ndarray]:
    """Sample photos resized (long side = max(size)), normalised with SAM's mean / std and
    zero-padded to ``size``: (1, 3, H, W) float32 each."""
    from .backends import calibration_images
    from .config import SamConfig
    from .inference.transforms import ResizeLongestSide

    try:
        from .export.mobile import sample_photos

        photos = sample_photos()[:count]
    except Exception:  # no scikit-image: synthetic photo-like inputs
        return [np.ascontiguousarray(c[..., : size[0], : size[1]]) for c in calibration_images(max(size), count=count)]
    fields = SamConfig.__dataclass_fields__
    mean = np.asarray(fields["pixel_mean"].default, np.float32).reshape(3, 1, 1)
    std = np.asarray(fields["pixel_std"].default, np.float32).reshape(3, 1, 1)
    resize = ResizeLongestSide(max(size))
    out = []
    for photo in photos:
        img = resize.apply_image(photo).transpose(2, 0, 1).astype(np.float32)  # (3, h, w)
        h, w = min(img.shape[1], size[0]), min(img.shape[2], size[1])
        x = np.zeros((1, 3, *size), np.float32)
        x[0, :, :h, :w] = ((img - mean) / std)[:, :h, :w]
        out.append(x)
    return out


class MobileEncoder:
    """``encoder`` (fused, eval, CPU, fp32) on ExecuTorch or LiteRT; callable on (B, 3, H, W)
    tensors -> (B, C, H/16, W/16) float32 on the input's device."""

    def __init__(self, encoder: nn.Module, backend: str, *, threads: Optional[int] = None, cache_dir: Optional[os.PathLike] = None,
                 calibration: Optional[Iterable[Any]] = None, calibration_size: int = 8) -> None:
        from .backends import _default_cache_dir

        self.encoder = encoder
        self.backend = backend
        self.runtime = "executorch" if backend.startswith("executorch") else "litert"
        self.quantize = "int8" if backend.endswith("int8") else None
        self.threads = threads
        self.cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        self.calibration = None if calibration is None else [torch.as_tensor(c).detach().to("cpu", torch.float32) for c in calibration]
        self.calibration_size = calibration_size
        self.runners: Dict[Tuple[int, int], Runner] = {}
        self.paths: Dict[Tuple[int, int], Path] = {}

    def _calibration(self, hw: Tuple[int, int]) -> List[torch.Tensor]:
        if self.calibration is not None:
            return [c.reshape(1, 3, *hw) for c in self.calibration]
        return [torch.from_numpy(c) for c in _photo_calibration(hw, self.calibration_size)]

    def path(self, hw: Tuple[int, int]) -> Path:
        """The exported encoder for input size ``hw`` (exported now if not in the cache)."""
        from .backends import BackendError, _fingerprint
        from .utils import atomic_write

        shape = (1, 3, *hw)
        name = f"encoder-{_fingerprint(self.encoder, shape)}-{self.runtime}-r{export_revision(self.runtime)}"
        calib: List[torch.Tensor] = []
        if self.quantize:
            calib = self._calibration(hw)
            if not calib:
                raise BackendError(f"{self.backend}: the calibration set is empty; pass some preprocessed images")
            digest = hashlib.sha1(b"".join(c.numpy().tobytes()[:: max(1, c.numel() // 4096)] for c in calib)).hexdigest()[:12]
            name += f"-int8-{digest}"
        path = self.cache_dir / f"{name}{SUFFIX[self.runtime]}"
        if not path.exists():
            example = torch.zeros(shape)
            inputs = [(c,) for c in calib]
            if self.runtime == "executorch":
                from .export.executorch import program

                data = program(self.encoder, (example,), self.quantize, inputs)
            else:
                from .export.tflite import model_bytes

                data = model_bytes(self.encoder, {"image": example}, ["image_embeddings"], self.quantize, inputs)
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            with atomic_write(path) as f:
                f.write(data)
        return path

    def runner(self, hw: Tuple[int, int]) -> Runner:
        if hw not in self.runners:
            path = self.paths[hw] = self.path(hw)
            self.runners[hw] = load_runner(path, self.runtime, self.threads)
        return self.runners[hw]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from .backends import run_per_image

        return run_per_image(self.backend, self.runner, x)


def export_revision(runtime: str) -> int:
    """The exporter's ``EXPORT_REVISION`` for ``runtime`` (part of cached files' names)."""
    if runtime == "executorch":
        from .export import executorch as module
    else:
        from .export import tflite as module  # type: ignore[no-redef]
    return int(module.EXPORT_REVISION)


def load_runner(path: os.PathLike, runtime: str, threads: Optional[int] = None) -> Runner:
    """A one-input, one-output model file as a numpy function on its runtime."""
    if runtime == "executorch":
        from .export.executorch import ExecuTorchModule, set_threads

        set_threads(threads)
        module = ExecuTorchModule(path)
        return lambda a: module(torch.from_numpy(a))[0].numpy()
    from .mobile_runtime import litert_runner

    run = litert_runner(path, threads or torch.get_num_threads())
    return lambda a: run(image=a)["image_embeddings"]


def prepare_mobile(encoder: nn.Module, backend: str, **options: Any) -> MobileEncoder:
    """``backends.prepare_encoder`` for the on-device backends (``encoder`` already fused, CPU,
    fp32); exported now for the encoder's ``img_size``, lazily for other sizes."""
    exported = MobileEncoder(encoder, backend, **options)
    size = getattr(encoder, "img_size", None)
    if isinstance(size, int):
        exported.runner((size, size))
    return exported
