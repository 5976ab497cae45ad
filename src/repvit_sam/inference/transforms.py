"""Resizing images and prompts so the image's long side equals the model's input size.

Conventions (segment_anything's): images are (H, W, 3) uint8 numpy arrays or (B, 3, H, W)
tensors; coordinates are XY in pixels, boxes XYXY; ``original_size`` is (H, W).
"""

from __future__ import annotations

from copy import deepcopy
from typing import Tuple

import numpy as np
import torch
from torch.nn import functional as F

from ..image import preprocess_shape, resize_longest_side


class ResizeLongestSide:
    def __init__(self, target_length: int) -> None:
        self.target_length = target_length

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> Tuple[int, int]:
        """(h, w) after scaling so that max(h, w) == long_side_length, rounded half up."""
        return preprocess_shape(oldh, oldw, long_side_length)

    def _xy_scale(self, original_size: Tuple[int, ...]) -> Tuple[float, float]:
        old_h, old_w = original_size
        new_h, new_w = self.get_preprocess_shape(old_h, old_w, self.target_length)
        return new_w / old_w, new_h / old_h

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (h, w, 3) uint8, PIL bilinear resampling (as the original code)."""
        return resize_longest_side(image, self.target_length)

    def apply_coords(self, coords: np.ndarray, original_size: Tuple[int, ...]) -> np.ndarray:
        """(..., 2) XY in original pixels -> the resized frame (float64 copy)."""
        sx, sy = self._xy_scale(original_size)
        coords = deepcopy(coords).astype(float)
        coords[..., 0] = coords[..., 0] * sx
        coords[..., 1] = coords[..., 1] * sy
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size: Tuple[int, ...]) -> np.ndarray:
        """(..., 4) XYXY -> (N, 4) in the resized frame."""
        return self.apply_coords(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def apply_image_torch(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float -> (B, 3, h, w), bilinear with antialiasing."""
        target = self.get_preprocess_shape(image.shape[2], image.shape[3], self.target_length)
        return F.interpolate(image, target, mode="bilinear", align_corners=False, antialias=True)

    def apply_coords_torch(self, coords: torch.Tensor, original_size: Tuple[int, ...]) -> torch.Tensor:
        """(..., 2) XY tensor -> the resized frame (float copy)."""
        sx, sy = self._xy_scale(original_size)
        coords = coords.clone().to(torch.float)
        coords[..., 0] = coords[..., 0] * sx
        coords[..., 1] = coords[..., 1] * sy
        return coords

    def apply_boxes_torch(self, boxes: torch.Tensor, original_size: Tuple[int, ...]) -> torch.Tensor:
        """(..., 4) XYXY tensor -> (N, 4) in the resized frame."""
        return self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)
