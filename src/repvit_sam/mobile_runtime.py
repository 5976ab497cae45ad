"""Predictors on the on-device exports, with :class:`repvit_sam.SamPredictor`'s API (the same
conventions and results as :class:`repvit_sam.onnx_runtime.OnnxSamPredictor`, whose image
preparation, prompt checks and mask post-processing they share).

>>> from repvit_sam.mobile_runtime import LiteRTSamPredictor
>>> p = LiteRTSamPredictor("mobile/")          # encoder.tflite, decoder.tflite, metadata.json
>>> p.set_image(image)                         # (H, W, 3) uint8 RGB
>>> masks, scores, low_res = p.predict(point_coords=[[500, 375]], point_labels=[1])

* :class:`LiteRTSamPredictor` runs ``repvit-sam export tflite`` folders with numpy, Pillow and
  ``ai-edge-litert`` only: no torch (importing this module does not import torch).
* :class:`ExecuTorchSamPredictor` runs ``repvit-sam export executorch`` folders on ExecuTorch's
  Python runtime (which itself needs torch for its tensors).

Both check every file against the SHA-256 in ``metadata.json`` before loading it, so a ``.pte``
or ``.tflite`` that is not what this package exported there is refused with one line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from .export.manifest import MobileModelError, pad_prompt, read_mobile_export
from .onnx_runtime import ExportedSamPredictor

PathLike = Union[str, os.PathLike]

__all__ = ["LiteRTSamPredictor", "ExecuTorchSamPredictor", "MobileModelError"]


class _MobilePredictor(ExportedSamPredictor):
    """Shared by both runtimes: the verified metadata, the static encoder input (padded to
    S x S, with ``image_size`` for a ``--preprocess`` export) and the fixed point slots."""

    fmt = ""

    def __init__(self, model_dir: PathLike, *, verify: bool = True) -> None:
        self.folder = Path(model_dir)
        self._read_metadata(read_mobile_export(self.folder, self.fmt, check_files=verify))
        self.max_points = int(self.metadata["max_points"])
        files = self.metadata.get("files", {})
        for part in ("encoder", "decoder"):
            if part not in files:
                raise MobileModelError(f"{self.folder} has no {part} (exported with --only?); both are needed for a predictor")

    def _file(self, part: str) -> Path:
        return self.folder / self.metadata["files"][part]

    def _run_encoder(self, x: np.ndarray) -> np.ndarray:
        if not self.encoder_preprocess:
            return self._encode({"image": x})
        h, w = x.shape[-2:]  # the resized image, 0..255: pad to the static square, say its size
        s = self.img_size
        padded = np.zeros((1, 3, s, s), np.float32)
        padded[:, :, :h, :w] = x
        return self._encode({"image": padded, "image_size": np.array([h, w], np.float32)})

    def _run_decoder(self, feeds: Dict[str, np.ndarray]) -> Tuple[Optional[np.ndarray], np.ndarray, np.ndarray]:
        coords, labels = pad_prompt(feeds["point_coords"][0], feeds["point_labels"][0], self.max_points)
        inputs = {"image_embeddings": feeds["image_embeddings"], "point_coords": coords, "point_labels": labels,
                  "mask_input": feeds["mask_input"], "has_mask_input": feeds["has_mask_input"]}
        iou, low = self._decode_raw(inputs)
        return None, iou, low

    def _encode(self, inputs: Dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def _decode_raw(self, inputs: Dict[str, np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
        """The decoder file on the interface's inputs -> (iou_predictions, low_res_masks)."""
        raise NotImplementedError

    def decode(self, inputs: Dict[str, np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
        """One call of the decoder file, as an app makes it per click: the interface's five
        inputs (points already padded to ``max_points``) -> (iou_predictions (1, 4),
        low_res_masks (1, 4, 4e, 4e))."""
        return self._decode_raw(inputs)


def _import_litert() -> Any:
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        raise MobileModelError("ai-edge-litert is not installed: pip install ai-edge-litert (or 'repvit-sam[mobile]')") from None
    return interpreter


def litert_runner(path: PathLike, num_threads: Optional[int] = None) -> Any:
    """A ``.tflite`` file's default signature as ``run(**float32 arrays) -> {name: float32 array}``.
    Inputs and outputs that the model keeps in int8 (an int8 export's image and embedding) are
    quantised and dequantised here with the scale and zero point the file stores, so callers see
    float32 either way."""
    interpreter = _import_litert()
    try:
        it = interpreter.Interpreter(model_path=str(path), num_threads=num_threads)
    except (ValueError, RuntimeError) as e:
        raise MobileModelError(f"{path} could not be loaded by LiteRT: {str(e).strip().splitlines()[0]}") from None
    runner = it.get_signature_runner()
    inputs, outputs = runner.get_input_details(), runner.get_output_details()

    def to_input(name: str, value: np.ndarray) -> np.ndarray:
        d = inputs[name]
        if d["dtype"] == np.float32:
            return np.ascontiguousarray(value, dtype=np.float32)
        scale, zero = d["quantization"]
        info = np.iinfo(d["dtype"])
        return np.clip(np.round(value / scale) + zero, info.min, info.max).astype(d["dtype"])

    def from_output(name: str, value: np.ndarray) -> np.ndarray:
        d = outputs[name]
        if d["dtype"] == np.float32:
            return value
        scale, zero = d["quantization"]
        return ((value.astype(np.float32) - zero) * scale).astype(np.float32)

    def run(**feeds: np.ndarray) -> Dict[str, np.ndarray]:
        out = runner(**{k: to_input(k, v) for k, v in feeds.items()})
        return {k: from_output(k, v) for k, v in out.items()}

    return run


class LiteRTSamPredictor(_MobilePredictor):
    """``SamPredictor`` on a ``repvit-sam export tflite`` folder, on LiteRT's interpreter (XNNPACK
    delegate). ``num_threads``: interpreter threads (default: LiteRT's choice). Torch-free."""

    fmt = "repvit-sam-tflite"

    def __init__(self, model_dir: PathLike, *, num_threads: Optional[int] = None, verify: bool = True) -> None:
        super().__init__(model_dir, verify=verify)
        self.encoder = litert_runner(self._file("encoder"), num_threads)
        self.decoder = litert_runner(self._file("decoder"), num_threads)
        self.reset_image()

    def _encode(self, inputs: Dict[str, np.ndarray]) -> np.ndarray:
        return self.encoder(**inputs)["image_embeddings"]

    def _decode_raw(self, inputs: Dict[str, np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
        out = self.decoder(**inputs)
        return out["iou_predictions"], out["low_res_masks"]


class ExecuTorchSamPredictor(_MobilePredictor):
    """``SamPredictor`` on a ``repvit-sam export executorch`` folder, on ExecuTorch's runtime
    (XNNPACK). ``num_threads``: size of ExecuTorch's thread pool (process-wide)."""

    fmt = "repvit-sam-executorch"

    def __init__(self, model_dir: PathLike, *, num_threads: Optional[int] = None, verify: bool = True) -> None:
        super().__init__(model_dir, verify=verify)
        import torch

        from .export.executorch import ExecuTorchModule, set_threads

        set_threads(num_threads)
        self._torch = torch
        self.encoder = ExecuTorchModule(self._file("encoder"))
        self.decoder = ExecuTorchModule(self._file("decoder"))
        self.reset_image()

    def _run(self, module: Any, arrays: Any) -> Any:
        out = module(*(self._torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in arrays))
        return [o.numpy() for o in out]

    def _encode(self, inputs: Dict[str, np.ndarray]) -> np.ndarray:
        return self._run(self.encoder, inputs.values())[0]

    def _decode_raw(self, inputs: Dict[str, np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
        from .export.manifest import MOBILE_DECODER_INPUTS

        iou, low = self._run(self.decoder, (inputs[k] for k in MOBILE_DECODER_INPUTS))
        return iou, low
