"""The Segment Anything composition: image encoder + prompt encoder + mask decoder."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..config import PIXEL_MEAN, PIXEL_STD
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder


class Sam(nn.Module):
    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: Sequence[float] = PIXEL_MEAN,
        pixel_std: Sequence[float] = PIXEL_STD,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        # Not in the checkpoints: buffers that do not persist.
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def img_size(self) -> int:
        return int(self.image_encoder.img_size)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) RGB in 0..255, long side = img_size -> normalised, zero-padded to a square."""
        x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.img_size - w, 0, self.img_size - h))

    def postprocess_masks(
        self, masks: torch.Tensor, input_size: Tuple[int, ...], original_size: Tuple[int, ...]
    ) -> torch.Tensor:
        """(B, M, 256, 256) logits -> (B, M, H, W) logits at the original image size.

        Upsample to the padded input square, crop the padding away (``input_size`` is the
        resized image's (h, w)), then resize to ``original_size`` (H, W); bilinear,
        align_corners=False, as the original code.
        """
        low = masks.shape[-1]
        f = self.img_size // low
        if f * low == self.img_size and masks.shape[-2] == low:
            # Upsample only the low-res cells the crop reads: output row y < h samples rows up to
            # floor((y + 0.5) / f - 0.5) + 1 <= ceil(h / f), and with the same scale (n / (n f) =
            # 1 / f) every kept value is computed exactly as in the full upsampling.
            hl, wl = (min(low, math.ceil(int(v) / f) + 1) for v in input_size[:2])
            masks = F.interpolate(masks[..., :hl, :wl], (hl * f, wl * f), mode="bilinear", align_corners=False)
        else:
            masks = F.interpolate(masks, (self.img_size, self.img_size), mode="bilinear", align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        if tuple(masks.shape[-2:]) == tuple(int(v) for v in original_size):
            return masks  # same size: bilinear resizing would copy every value unchanged
        return F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)

    @torch.no_grad()
    def forward(self, batched_input: List[Dict[str, Any]], multimask_output: bool) -> List[Dict[str, torch.Tensor]]:
        """segment_anything's end-to-end interface.

        Each record: ``image`` (3, h, w) already resized so the long side is img_size;
        ``original_size`` (H, W); optional ``point_coords`` (B, N, 2) and ``point_labels``
        (B, N), ``boxes`` (B, 4), ``mask_inputs`` (B, 1, 256, 256), all in the resized frame.
        Returns per image ``masks`` (B, M, H, W) bool, ``iou_predictions`` (B, M) and
        ``low_res_logits`` (B, M, 256, 256).
        """
        images = torch.stack([self.preprocess(r["image"]) for r in batched_input], dim=0)
        embeddings = self.image_encoder(images)
        outputs = []
        for record, emb in zip(batched_input, embeddings):
            points = (record["point_coords"], record["point_labels"]) if "point_coords" in record else None
            sparse, dense = self.prompt_encoder(points, record.get("boxes"), record.get("mask_inputs"))
            low_res, iou = self.mask_decoder(
                emb.unsqueeze(0), self.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output
            )
            masks = self.postprocess_masks(low_res, record["image"].shape[-2:], record["original_size"])
            outputs.append(
                {"masks": masks > self.mask_threshold, "iou_predictions": iou, "low_res_logits": low_res}
            )
        return outputs
