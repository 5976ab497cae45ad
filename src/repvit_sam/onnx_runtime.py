"""Torch-free inference: run models exported by ``repvit-sam export onnx`` with numpy, Pillow
and onnxruntime only.

>>> from repvit_sam.onnx_runtime import OnnxSamPredictor
>>> predictor = OnnxSamPredictor("exported/")          # encoder.onnx, decoder.onnx, metadata.json
>>> predictor.set_image(image)                          # (H, W, 3) uint8 RGB
>>> masks, scores, low_res = predictor.predict(point_coords=[[500, 375]], point_labels=[1])

The API is :class:`repvit_sam.SamPredictor`'s (``set_image``, ``predict``, ``get_image_embedding``,
``reset_image``) with the same conventions and results: the image is resized with the same PIL
bilinear resize, normalised and zero-padded the same way, and prompts go through the same
checks. Importing this module does not import torch (nor does ``import repvit_sam``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from .image import resize_longest_side, to_rgb_uint8
from .utils import require
from .inference.prompts import check_boxes, check_mask_input, check_points, check_prompt_given

Prediction = Tuple[np.ndarray, np.ndarray, np.ndarray]
PathLike = Union[str, os.PathLike]


class OnnxModelError(RuntimeError):
    """The exported model folder is missing, incomplete or not ours."""


def _import_onnxruntime():
    return require("onnxruntime", "export", OnnxModelError)


def resize_bilinear(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Resize the last two axes of ``x`` bilinearly with half-pixel centres, no antialiasing
    (torch's ``F.interpolate(mode="bilinear", align_corners=False)``)."""

    def axis(n_in: int, n_out: int):
        src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        src = np.maximum(src, 0.0)
        i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        frac = (src - i0).astype(np.float32)
        return i0, i1, frac

    y0, y1, fy = axis(x.shape[-2], out_h)
    x0, x1, fx = axis(x.shape[-1], out_w)
    rows = x[..., y0, :] * (1 - fy)[:, None] + x[..., y1, :] * fy[:, None]
    return rows[..., x0] * (1 - fx) + rows[..., x1] * fx


def read_export_metadata(folder: PathLike, fmt: str, what: str, command: str, error: type = OnnxModelError) -> Dict[str, Any]:
    """``folder/metadata.json`` of an export, checked to have ``"format": fmt``. Errors are
    ``error`` and name ``what`` (e.g. "ONNX") and ``command``, which writes such folders."""
    meta_path = Path(folder) / "metadata.json"
    if not meta_path.is_file():
        raise error(f"{meta_path} not found: give the folder written by '{command}'")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise error(f"{meta_path} could not be read: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise error(f"{meta_path} is not a repvit-sam {what} export (no format {fmt!r})")
    return meta


class ExportedSamPredictor:
    """``SamPredictor``'s numpy API over an exported encoder and decoder: image preparation,
    prompt checks and mask post-processing shared by every torch-free runtime. A subclass
    reads its model folder, sets the attributes below from its metadata, and implements
    ``_run_encoder`` and ``_run_decoder``."""

    metadata: Dict[str, Any]
    img_size: int
    pixel_mean: np.ndarray  # (3, 1, 1) float32
    pixel_std: np.ndarray  # (3, 1, 1) float32
    image_format: str
    mask_threshold: float
    low_res_size: Tuple[int, int]
    encoder_preprocess: bool  # the encoder normalises and pads the resized image itself
    static_size: bool  # the decoder's masks are (1, 4, S, S) over the padded square

    def _read_metadata(self, meta: Dict[str, Any]) -> None:
        self.metadata = m = meta
        self.img_size = int(m["img_size"])
        self.pixel_mean = np.asarray(m["pixel_mean"], dtype=np.float32).reshape(3, 1, 1)
        self.pixel_std = np.asarray(m["pixel_std"], dtype=np.float32).reshape(3, 1, 1)
        self.image_format = m.get("image_format", "RGB")
        self.mask_threshold = float(m.get("mask_threshold", 0.0))
        self.low_res_size = tuple(int(v) for v in m["low_res_size"])
        self.encoder_preprocess = bool(m["encoder_preprocess"])
        self.static_size = bool(m.get("decoder_static_size", True))

    def _run_encoder(self, x: np.ndarray) -> np.ndarray:
        """(1, 3, S, S) normalised padded image (or (1, 3, h, w) in 0..255 when the encoder
        preprocesses) -> (1, C, e, e) embedding."""
        raise NotImplementedError

    def _run_decoder(self, feeds: Dict[str, np.ndarray]) -> Tuple[Optional[np.ndarray], np.ndarray, np.ndarray]:
        """The ONNX decoder interface's feeds -> (masks or None, iou_predictions, low_res_masks),
        each with a leading batch axis of 1. ``None`` masks: the decoder gives low-res logits only."""
        raise NotImplementedError

    # ------------------------------------------------------------------ image
    def reset_image(self) -> None:
        self.is_image_set = False
        self.features: Optional[np.ndarray] = None
        self.original_size: Optional[Tuple[int, int]] = None
        self.input_size: Optional[Tuple[int, int]] = None

    def _encoder_input(self, rgb: np.ndarray) -> Tuple[np.ndarray, Tuple[int, int]]:
        resized = resize_longest_side(rgb, self.img_size)
        h, w = resized.shape[:2]
        x = resized.transpose(2, 0, 1).astype(np.float32)  # (3, h, w) in 0..255
        if not self.encoder_preprocess:
            x = (x - self.pixel_mean) / self.pixel_std
            x = np.pad(x, ((0, 0), (0, self.img_size - h), (0, self.img_size - w)))
        return np.ascontiguousarray(x[None]), (h, w)

    def set_image(self, image: Any, image_format: str = "RGB") -> None:
        """Compute the embedding of ``image``: (H, W, 3) uint8 in ``image_format`` (RGB or
        BGR), or any image ``SamPredictor.set_image`` takes (grey, alpha, 16-bit and float
        arrays, PIL images), converted by :func:`repvit_sam.image.to_rgb_uint8`."""
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        rgb = to_rgb_uint8(image)
        if image_format != self.image_format:
            rgb = rgb[..., ::-1]
        x, input_size = self._encoder_input(rgb)
        self.reset_image()
        self.features = self._run_encoder(x)
        self.original_size = (int(rgb.shape[0]), int(rgb.shape[1]))
        self.input_size = input_size
        self.is_image_set = True

    def get_image_embedding(self) -> np.ndarray:
        """The current image's embedding, (1, C, e, e) float32."""
        self._require_image("get_image_embedding")
        assert self.features is not None
        return self.features

    def _require_image(self, what: str) -> None:
        if not self.is_image_set:
            raise RuntimeError(f"An image must be set with .set_image(...) before {what}().")

    # ------------------------------------------------------------------ prompts
    def _to_input_frame(self, xy: np.ndarray) -> np.ndarray:
        """(..., 2) XY in original pixels -> the resized frame (as ResizeLongestSide.apply_coords)."""
        assert self.original_size is not None and self.input_size is not None
        (old_h, old_w), (new_h, new_w) = self.original_size, self.input_size
        out = xy.astype(np.float64).copy()
        out[..., 0] = out[..., 0] * (new_w / old_w)
        out[..., 1] = out[..., 1] * (new_h / old_h)
        return out

    def predict(
        self,
        point_coords: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
        box: Optional[np.ndarray] = None,
        mask_input: Optional[np.ndarray] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> Prediction:
        """Masks for prompts on the current image; arguments and results as
        :meth:`repvit_sam.SamPredictor.predict` (several boxes (B, 4) give a leading B axis)."""
        self._require_image("predict")
        assert self.original_size is not None
        size = self.original_size
        check_prompt_given(point_coords, point_labels, box, mask_input)
        boxes = check_boxes(box, size) if box is not None else None
        n = 1 if boxes is None else boxes.shape[0]
        coords = np.zeros((0, 2))
        labels = np.zeros((0,))
        if point_coords is not None:
            pc, pl = check_points(point_coords, point_labels, size)
            coords, labels = self._to_input_frame(pc), pl.astype(np.float64)
        masks_in = None
        if mask_input is not None:
            masks_in = check_mask_input(mask_input, n, self.low_res_size)

        results = []
        for i in range(n):
            if boxes is not None:  # box corners follow the clicks, labelled 2 and 3
                c = np.concatenate([coords, self._to_input_frame(boxes[i].reshape(2, 2))])
                lab = np.concatenate([labels, [2.0, 3.0]])
            elif point_coords is not None:  # a padding point closes a prompt without a box
                c = np.concatenate([coords, np.zeros((1, 2))])
                lab = np.concatenate([labels, [-1.0]])
            else:  # a mask alone: no sparse token at all
                c, lab = coords, labels
            m = masks_in[i : i + 1] if masks_in is not None else None
            results.append(self._decode(c, lab, m, multimask_output, return_logits))
        masks, scores, low = (np.stack(parts) for parts in zip(*results))
        if n == 1:
            return masks[0], scores[0], low[0]
        return masks, scores, low

    def _decode(
        self, coords: np.ndarray, labels: np.ndarray, mask: Optional[np.ndarray], multimask_output: bool, return_logits: bool
    ) -> Prediction:
        assert self.features is not None and self.original_size is not None and self.input_size is not None
        low_h, low_w = self.low_res_size
        feeds = {
            "image_embeddings": self.features,
            "point_coords": coords.astype(np.float32)[None],
            "point_labels": labels.astype(np.float32)[None],
            "mask_input": mask if mask is not None else np.zeros((1, 1, low_h, low_w), np.float32),
            "has_mask_input": np.array([1.0 if mask is not None else 0.0], np.float32),
            "orig_im_size": np.array(self.original_size, np.float32),
        }
        masks, scores, low = self._run_decoder(feeds)
        sel = slice(1, None) if multimask_output else slice(0, 1)
        scores, low = scores[0, sel], low[0, sel]
        h, w = self.input_size
        if masks is None:  # low-res logits only: up to the padded square, as Sam.postprocess_masks
            masks = resize_bilinear(low, self.img_size, self.img_size)[:, :h, :w]
            masks = resize_bilinear(masks, *self.original_size)
        elif self.static_size:  # (C, S, S) over the padded square: crop, then to the original size
            masks = resize_bilinear(masks[0, sel, :h, :w], *self.original_size)
        else:
            masks = masks[0, sel]
        if not return_logits:
            masks = masks > self.mask_threshold
        return masks, scores, low


class OnnxSamPredictor(ExportedSamPredictor):
    """``SamPredictor`` on an exported model folder (``encoder.onnx``, ``decoder.onnx``,
    ``metadata.json``), on onnxruntime.

    ``providers``: onnxruntime execution providers (default CPU); ``num_threads``: intra-op
    threads (default: onnxruntime's choice). Either graph may be given separately
    (``encoder=`` / ``decoder=`` paths), e.g. to use a quantised encoder.
    """

    def __init__(
        self,
        model_dir: PathLike,
        *,
        providers: Optional[Sequence[str]] = None,
        num_threads: Optional[int] = None,
        encoder: Optional[PathLike] = None,
        decoder: Optional[PathLike] = None,
    ) -> None:
        folder = Path(model_dir)
        self._read_metadata(read_export_metadata(folder, "repvit-sam-onnx", "ONNX", "repvit-sam export onnx"))
        m = self.metadata

        ort = _import_onnxruntime()
        options = ort.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = int(num_threads)
            options.inter_op_num_threads = 1
        providers = list(providers) if providers else ["CPUExecutionProvider"]

        def session(path: Optional[PathLike], default: str):
            p = Path(path) if path is not None else folder / m.get("files", {}).get(default.split(".")[0], default)
            if not p.is_file():
                raise OnnxModelError(f"{p} not found (exported with the {default.split('.')[0]} left out?)")
            return ort.InferenceSession(str(p), sess_options=options, providers=providers)

        self.encoder = session(encoder, "encoder.onnx")
        self.decoder = session(decoder, "decoder.onnx")
        self.reset_image()

    def _run_encoder(self, x: np.ndarray) -> np.ndarray:
        return self.encoder.run(None, {self.encoder.get_inputs()[0].name: x})[0]

    def _run_decoder(self, feeds: Dict[str, np.ndarray]) -> Tuple[Optional[np.ndarray], np.ndarray, np.ndarray]:
        masks, scores, low = self.decoder.run(None, feeds)
        return masks, scores, low
