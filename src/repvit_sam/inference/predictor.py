"""Prompted segmentation of one image: embed once, then decode many prompts cheaply.

API-compatible with segment_anything's ``SamPredictor``: same methods, arguments, return
values and coordinate conventions (XY pixels of the original image, boxes XYXY).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..modeling.sam import Sam
from .fast_decoder import FastDecoder, sparse_embeddings
from .prompts import PromptError, check_boxes, check_mask_input, check_points, check_prompt_given
from .transforms import ResizeLongestSide

Prediction = Tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class ImageEmbedding:
    """An embedded image: all a prompt needs, not the pixels.

    features: (1, C, h, w) image embedding (C = 256, h = w = 64 for the official models);
    original_size: the image's (H, W); input_size: its (h, w) after resizing the long side to
    the model's input size.
    """

    features: torch.Tensor
    original_size: Tuple[int, int]
    input_size: Tuple[int, int]

# Prompts decoded per call when many boxes are given: bounds the full-resolution logits held
# at once (chunk x 3 x H x W floats) while keeping the decoder's matrix products large.
DECODE_CHUNK = 16

# Prepared fast decoders kept per predictor (one per image embedding, most recent first out).
FAST_DECODERS_KEPT = 4


class SamPredictor:
    """Embed an image once with ``set_image``, then ``predict`` masks for any number of prompts.

    Beyond segment_anything: ``predict`` takes several boxes at once (``box`` of shape (B, 4));
    ``set_image_batch`` / ``predict_batch`` embed several images in one encoder pass; prompts
    are validated with errors that name the problem; ``from_pretrained`` builds a ready model.
    """

    def __init__(self, sam_model: Sam, backend: Optional[str] = None, fast_decoder: bool = True,
                 backend_options: Optional[Dict[str, Any]] = None) -> None:
        """``backend``: how the image encoder runs (see :mod:`repvit_sam.backends`, e.g.
        ``"fused-cl"`` or ``"bf16"``); ``None`` calls ``sam_model.image_encoder`` as it is.
        ``backend_options``: keyword arguments for ``backends.prepare_encoder`` (``threads``,
        ``cache_dir``, ``calibration`` for the int8 backends, ...).
        ``fast_decoder``: decode with :class:`FastDecoder` (the same function rearranged, about
        2x faster per prompt; results equal up to float rounding, ~1e-6 relative); ``False``
        calls ``sam_model.mask_decoder`` itself."""
        self.model = sam_model
        self.backend = backend
        self.fast_decoder = fast_decoder
        self._fast_cache: List[Tuple[torch.Tensor, FastDecoder]] = []
        self._fast_lock = threading.Lock()
        if backend is None:
            if backend_options:
                raise ValueError("backend_options need a backend: pass backend='int8', 'executorch-int8', ...")
            self._encode = sam_model.image_encoder
        else:
            from ..backends import prepare_encoder

            self._encode = prepare_encoder(sam_model.image_encoder, backend, **(backend_options or {}))
        self.transform = ResizeLongestSide(sam_model.image_encoder.img_size)
        self.reset_image()

    @classmethod
    def from_pretrained(
        cls,
        name: str = "repvit",
        checkpoint: Optional[str] = None,
        device: Optional[str | torch.device] = None,
        fuse: bool = True,
        download: bool = True,
        backend: Optional[str] = None,
    ) -> "SamPredictor":
        """A predictor on the official weights of ``name`` (fetched into the cache on first use,
        verified), or on ``checkpoint`` when given; re-parameterised for inference if ``fuse``."""
        from ..hub import load_pretrained
        from ..modeling.fuse import fuse_model

        model = load_pretrained(name, checkpoint=checkpoint, device=device, download=download)
        return cls(fuse_model(model, inplace=True) if fuse else model, backend=backend)

    # ------------------------------------------------------------------ image
    def _prepare(self, image: object, image_format: str) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Any supported image -> ((1, 3, h, w) uint8 tensor resized for the model, (H, W))."""
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        from ..image import to_rgb_uint8

        rgb = to_rgb_uint8(image)  # (H, W, 3) uint8; documents the accepted inputs
        if image_format != self.model.image_format:
            rgb = rgb[..., ::-1]
        input_image = self.transform.apply_image(np.ascontiguousarray(rgb))
        input_torch = torch.as_tensor(input_image, device=self.device)
        return input_torch.permute(2, 0, 1).contiguous()[None, :, :, :], (rgb.shape[0], rgb.shape[1])

    @torch.no_grad()
    def embed(self, image: np.ndarray, image_format: str = "RGB") -> ImageEmbedding:
        """The embedding of ``image`` (as ``set_image`` takes it), without changing the
        predictor's current image: for callers that keep embeddings themselves (a server's
        cache, a video) and decode with :meth:`predict_on` or :meth:`set_embedding`."""
        tensor, original_size = self._prepare(image, image_format)
        features = self._encode(self.model.preprocess(tensor))
        return ImageEmbedding(features, original_size, (int(tensor.shape[-2]), int(tensor.shape[-1])))

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Compute the embedding of ``image``: (H, W, 3) uint8 in ``image_format`` (RGB or BGR).

        Grayscale, RGBA, 16-bit and float-in-[0, 1] arrays (and PIL images) are converted to
        8-bit RGB by :func:`repvit_sam.image.to_rgb_uint8`; other inputs are refused clearly.
        """
        input_torch, original_size = self._prepare(image, image_format)
        self.set_torch_image(input_torch, original_size)

    @torch.no_grad()
    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: Tuple[int, ...]) -> None:
        """Embed an image already resized by ``self.transform``: (1, 3, h, w) with max(h, w)
        equal to the model's input size; ``original_image_size`` is the (H, W) before resizing."""
        size = self.model.image_encoder.img_size
        if (
            transformed_image.ndim != 4
            or transformed_image.shape[1] != 3
            or max(*transformed_image.shape[2:]) != size
        ):
            raise ValueError(
                f"set_torch_image expects a (B, 3, h, w) tensor with long side {size} "
                f"(use predictor.transform.apply_image_torch first); got {tuple(transformed_image.shape)}"
            )
        self.reset_image()
        self.original_size = tuple(int(v) for v in original_image_size)
        self.input_size = tuple(int(v) for v in transformed_image.shape[-2:])
        input_image = self.model.preprocess(transformed_image)
        self.features = self._encode(input_image)
        self.is_image_set = True

    def set_embedding(
        self, features: torch.Tensor, original_size: Tuple[int, int], input_size: Tuple[int, int]
    ) -> None:
        """Use an embedding computed earlier (a cache, another process) instead of running the
        encoder: ``features`` (1, C, h, w) as ``get_image_embedding`` returns it, moved to the
        model's device; ``original_size`` the image's (H, W); ``input_size`` its (h, w) after
        ``self.transform`` (long side = the model's input size)."""
        emb = self.model.prompt_encoder.image_embedding_size
        channels = self.model.prompt_encoder.embed_dim
        if not isinstance(features, torch.Tensor) or features.ndim != 4 or features.shape[0] != 1 or tuple(features.shape[1:]) != (channels, *emb):
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise ValueError(f"set_embedding expects features of shape (1, {channels}, {emb[0]}, {emb[1]}) for this model, got {shape}")
        original = tuple(int(v) for v in original_size)
        expected = self.transform.get_preprocess_shape(original[0], original[1], self.transform.target_length)
        if tuple(int(v) for v in input_size) != tuple(expected):
            raise ValueError(f"set_embedding: input_size {tuple(input_size)} does not fit original_size {original}; expected {tuple(expected)}")
        self.reset_image()
        self.features = features.to(self.device)
        self.original_size = original
        self.input_size = tuple(expected)
        self.is_image_set = True

    def get_image_embedding(self) -> torch.Tensor:
        """The current image's embedding, (1, 256, 64, 64)."""
        self._require_image("get_image_embedding")
        assert self.features is not None
        return self.features

    def reset_image(self) -> None:
        self.is_image_set = False
        self.features: Optional[torch.Tensor] = None
        self.original_size: Optional[Tuple[int, ...]] = None
        self.input_size: Optional[Tuple[int, ...]] = None
        self._batch: List[Tuple[torch.Tensor, Tuple[int, int], Tuple[int, int]]] = []

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _require_image(self, what: str) -> None:
        if not self.is_image_set:
            raise RuntimeError(f"An image must be set with .set_image(...) before {what}().")

    # ------------------------------------------------------------------ prompts
    def predict(
        self,
        point_coords: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
        box: Optional[np.ndarray] = None,
        mask_input: Optional[np.ndarray] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> Prediction:
        """Masks for prompts on the current image.

        point_coords: (N, 2) XY in original-image pixels; point_labels: (N,) 1 = foreground,
        0 = background, -1 = ignore; box: (4,) XYXY, or (B, 4) for B boxes decoded in one
        call (points, if any, then apply to every box); mask_input: (1, 256, 256) low-res
        logits from a previous call. Returns masks (C, H, W) bool (logits if
        ``return_logits``), scores (C,) and low-res logits (C, 256, 256), with C = 3 if
        ``multimask_output`` else 1; with B > 1 boxes every output gains a leading B axis.
        """
        self._require_image("predict")
        assert self.features is not None and self.original_size is not None and self.input_size is not None
        return self._predict_one(
            self.features, self.original_size, self.input_size,
            point_coords, point_labels, box, mask_input, multimask_output, return_logits,
        )

    def predict_on(
        self,
        embedding: ImageEmbedding,
        point_coords: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
        box: Optional[np.ndarray] = None,
        mask_input: Optional[np.ndarray] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> Prediction:
        """``predict`` on a given :class:`ImageEmbedding` (from :meth:`embed`) instead of the
        current image; reads and writes no predictor state, so threads may share a predictor."""
        return self._predict_one(
            embedding.features, embedding.original_size, embedding.input_size,
            point_coords, point_labels, box, mask_input, multimask_output, return_logits,
        )

    def _predict_one(
        self,
        features: torch.Tensor,
        original_size: Tuple[int, ...],
        input_size: Tuple[int, ...],
        point_coords: object,
        point_labels: object,
        box: object,
        mask_input: object,
        multimask_output: bool,
        return_logits: bool,
    ) -> Prediction:
        size = (int(original_size[0]), int(original_size[1]))
        check_prompt_given(point_coords, point_labels, box, mask_input)
        boxes = check_boxes(box, size) if box is not None else None
        n = 1 if boxes is None else boxes.shape[0]
        coords_t = labels_t = box_t = mask_t = None
        if point_coords is not None:
            coords, labels = check_points(point_coords, point_labels, size)
            coords = self.transform.apply_coords(coords, size)
            coords_t = torch.as_tensor(coords, dtype=torch.float, device=self.device)[None].expand(n, -1, -1)
            labels_t = torch.as_tensor(labels, dtype=torch.int, device=self.device)[None].expand(n, -1)
        if boxes is not None:
            box_t = torch.as_tensor(self.transform.apply_boxes(boxes, size), dtype=torch.float, device=self.device)
        if mask_input is not None:
            low_hw = self.model.prompt_encoder.mask_input_size
            mask_t = torch.as_tensor(check_mask_input(mask_input, n, low_hw), device=self.device)

        outs: List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for i in range(0, n, DECODE_CHUNK):
            sl = slice(i, i + DECODE_CHUNK)
            outs.append(
                self._decode(
                    features, size, input_size,
                    None if coords_t is None else coords_t[sl], None if labels_t is None else labels_t[sl],
                    None if box_t is None else box_t[sl], None if mask_t is None else mask_t[sl],
                    multimask_output, return_logits,
                )
            )
        masks, iou, low = (torch.cat(parts).cpu().numpy() for parts in zip(*outs))
        if n == 1:
            return masks[0], iou[0], low[0]
        return masks, iou, low

    @torch.no_grad()
    def predict_torch(
        self,
        point_coords: Optional[torch.Tensor],
        point_labels: Optional[torch.Tensor],
        boxes: Optional[torch.Tensor] = None,
        mask_input: Optional[torch.Tensor] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batched prompts already in the resized frame (use ``self.transform.apply_*_torch``).

        point_coords: (B, N, 2); point_labels: (B, N); boxes: (B, 4); mask_input:
        (B, 1, 256, 256). Returns masks (B, C, H, W), scores (B, C), low-res logits
        (B, C, 256, 256).
        """
        self._require_image("predict_torch")
        assert self.features is not None and self.original_size is not None and self.input_size is not None
        return self._decode(
            self.features, self.original_size, self.input_size,
            point_coords, point_labels, boxes, mask_input, multimask_output, return_logits,
        )

    @torch.no_grad()
    def _decode(
        self,
        features: torch.Tensor,
        original_size: Tuple[int, ...],
        input_size: Tuple[int, ...],
        point_coords: Optional[torch.Tensor],
        point_labels: Optional[torch.Tensor],
        boxes: Optional[torch.Tensor],
        mask_input: Optional[torch.Tensor],
        multimask_output: bool,
        return_logits: bool,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        points = (point_coords, point_labels) if point_coords is not None else None
        if self.fast_decoder and features.shape[0] == 1:
            sparse = sparse_embeddings(self.model.prompt_encoder, points, boxes, mask_input)
            low_res, iou = self._fast_for(features)(sparse, None, multimask_output, mask_input=mask_input)
        else:
            sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
            low_res, iou = self.model.mask_decoder(
                image_embeddings=features,
                image_pe=self.model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask_output,
            )
        masks = self.model.postprocess_masks(low_res, input_size, original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou, low_res

    def _fast_for(self, features: torch.Tensor) -> FastDecoder:
        """A fast decoder prepared for ``features`` (its per-image work done once). One decoder
        per embedding, the last few kept: threads decoding different images never share one."""
        with self._fast_lock:
            for i, (feats, dec) in enumerate(self._fast_cache):
                if feats is features:
                    self._fast_cache.append(self._fast_cache.pop(i))  # most recently used last
                    return dec
        dec = FastDecoder(self.model)
        dec.set_image(features)
        with self._fast_lock:
            self._fast_cache.append((features, dec))
            del self._fast_cache[:-FAST_DECODERS_KEPT]
        return dec

    # ------------------------------------------------------------------ several images
    @torch.no_grad()
    def set_image_batch(self, images: Sequence[np.ndarray], image_format: str = "RGB", batch_size: int = 4) -> None:
        """Embed several images (any sizes), ``batch_size`` at a time through the encoder.

        Then ``predict_batch`` decodes prompts for each. Replaces any image set before.
        """
        if len(images) == 0:
            raise ValueError("set_image_batch needs at least one image")
        prepared = [self._prepare(im, image_format) for im in images]
        self.reset_image()
        batch = []
        for i in range(0, len(prepared), batch_size):
            chunk = prepared[i : i + batch_size]
            x = torch.cat([self.model.preprocess(t) for t, _ in chunk])  # (b, 3, S, S)
            feats = self._encode(x)
            for (t, orig), f in zip(chunk, feats):
                batch.append((f[None], orig, (int(t.shape[-2]), int(t.shape[-1]))))
        self._batch = batch

    def predict_batch(
        self,
        point_coords: Optional[Sequence[Optional[np.ndarray]]] = None,
        point_labels: Optional[Sequence[Optional[np.ndarray]]] = None,
        box: Optional[Sequence[Optional[np.ndarray]]] = None,
        mask_input: Optional[Sequence[Optional[np.ndarray]]] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> List[Prediction]:
        """``predict`` for each image of ``set_image_batch``: every argument is a list with one
        entry (or None) per image, in original-image pixels of that image."""
        if not self._batch:
            raise RuntimeError("Images must be set with .set_image_batch(...) before predict_batch().")
        n = len(self._batch)
        args = []
        for name, value in (("point_coords", point_coords), ("point_labels", point_labels), ("box", box), ("mask_input", mask_input)):
            if value is None:
                value = [None] * n
            if len(value) != n:
                raise PromptError(f"{name} must have one entry per image ({n}), got {len(value)}")
            args.append(value)
        return [
            self._predict_one(f, orig, inp, pc, pl, b, m, multimask_output, return_logits)
            for (f, orig, inp), pc, pl, b, m in zip(self._batch, *args)
        ]
