"""Prompted segmentation of one image: embed once, then decode many prompts cheaply.

API-compatible with segment_anything's ``SamPredictor``: same methods, arguments, return
values and coordinate conventions (XY pixels of the original image, boxes XYXY).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from ..modeling.sam import Sam
from .transforms import ResizeLongestSide


class SamPredictor:
    def __init__(self, sam_model: Sam) -> None:
        self.model = sam_model
        self.transform = ResizeLongestSide(sam_model.image_encoder.img_size)
        self.reset_image()

    # ------------------------------------------------------------------ image
    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Compute the embedding of ``image``: (H, W, 3) uint8, in ``image_format`` (RGB/BGR)."""
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be an (H, W, 3) array, got shape {image.shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"image must be uint8 (0..255), got {image.dtype}")
        if image_format != self.model.image_format:
            image = image[..., ::-1]
        input_image = self.transform.apply_image(np.ascontiguousarray(image))
        input_torch = torch.as_tensor(input_image, device=self.device)
        input_torch = input_torch.permute(2, 0, 1).contiguous()[None, :, :, :]  # (1, 3, h, w)
        self.set_torch_image(input_torch, image.shape[:2])

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
        self.features = self.model.image_encoder(input_image)
        self.is_image_set = True

    def get_image_embedding(self) -> torch.Tensor:
        """The current image's embedding, (1, 256, 64, 64)."""
        self._require_image("get_image_embedding")
        assert self.features is not None
        return self.features

    def reset_image(self) -> None:
        self.is_image_set = False
        self.features: Optional[torch.Tensor] = None
        self.orig_h = self.orig_w = self.input_h = self.input_w = None
        self.original_size: Optional[Tuple[int, ...]] = None
        self.input_size: Optional[Tuple[int, ...]] = None

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
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for one set of prompts on the current image.

        point_coords: (N, 2) XY in original-image pixels; point_labels: (N,) 1 = foreground,
        0 = background; box: (4,) XYXY; mask_input: (1, 256, 256) low-res logits from a
        previous call. Returns masks (C, H, W) bool (logits if ``return_logits``), scores (C,)
        and low-res logits (C, 256, 256); C = 3 with ``multimask_output`` else 1.
        """
        self._require_image("predict")
        assert self.original_size is not None
        coords_t = labels_t = box_t = mask_t = None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels must be given with point_coords")
            pc = self.transform.apply_coords(np.asarray(point_coords), self.original_size)
            coords_t = torch.as_tensor(pc, dtype=torch.float, device=self.device)[None, :, :]
            labels_t = torch.as_tensor(np.asarray(point_labels), dtype=torch.int, device=self.device)[None, :]
        if box is not None:
            b = self.transform.apply_boxes(np.asarray(box), self.original_size)
            box_t = torch.as_tensor(b, dtype=torch.float, device=self.device)[None, :]
        if mask_input is not None:
            mask_t = torch.as_tensor(np.asarray(mask_input), dtype=torch.float, device=self.device)[None, :, :, :]

        masks, iou, low = self.predict_torch(coords_t, labels_t, box_t, mask_t, multimask_output, return_logits)
        return masks[0].detach().cpu().numpy(), iou[0].detach().cpu().numpy(), low[0].detach().cpu().numpy()

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
        points = (point_coords, point_labels) if point_coords is not None else None
        sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        low_res, iou = self.model.mask_decoder(
            image_embeddings=self.features,
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )
        masks = self.model.postprocess_masks(low_res, self.input_size, self.original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou, low_res
