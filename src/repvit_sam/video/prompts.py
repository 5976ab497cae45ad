"""Prompts and per-frame results of :class:`~repvit_sam.video.predictor.VideoPredictor`.

:class:`Prompts` collects each object's prompt (points, a box or a mask on one frame) and
checks it against the video; :class:`FrameResult` is what propagation yields per frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..inference.prompts import PromptError, check_boxes, check_points


# ---------------------------------------------------------------------------- prompts
@dataclass
class ObjectPrompt:
    """One object's prompt, on one frame. points: (N, 2) XY pixels, labels (N,) 1/0; box: (4,)
    XYXY pixels; mask: (H, W) bool. A mask prompt stands alone; points and a box combine."""

    obj_id: int
    frame: int
    points: Optional[np.ndarray] = None
    labels: Optional[np.ndarray] = None
    box: Optional[np.ndarray] = None
    mask: Optional[np.ndarray] = None


class Prompts:
    """The prompts of a video, per object id. ``add`` may be called several times for the same
    object on the same frame (points accumulate); an object prompted on two frames, given two
    boxes, or a mask together with other prompts is refused (:class:`PromptError`)."""

    def __init__(self) -> None:
        self.objects: Dict[int, ObjectPrompt] = {}

    def add(self, frame: int, obj_id: int, points: Optional[object] = None, labels: Optional[object] = None,
            box: Optional[object] = None, mask: Optional[np.ndarray] = None) -> None:
        if not isinstance(obj_id, (int, np.integer)) or obj_id < 1:
            raise PromptError(f"object ids are integers >= 1 (0 is the background), got {obj_id!r}")
        if not isinstance(frame, (int, np.integer)) or frame < 0:
            raise PromptError(f"frame must be an integer >= 0, got {frame!r}")
        obj_id, frame = int(obj_id), int(frame)
        if points is None and box is None and mask is None:
            raise PromptError(f"object {obj_id}: give points, a box or a mask")
        if points is None and labels is not None:
            raise PromptError(f"object {obj_id}: labels given without points")
        p = self.objects.get(obj_id)
        if p is None:
            p = self.objects[obj_id] = ObjectPrompt(obj_id, frame)
        elif p.frame != frame:
            raise PromptError(f"object id {obj_id} is already prompted on frame {p.frame}: each object is prompted on one frame "
                              f"(use a new id for frame {frame})")
        elif p.mask is not None or mask is not None:
            raise PromptError(f"object id {obj_id} is already used on frame {frame}: a mask prompt stands alone (use a new id)")
        if mask is not None:
            m = np.asarray(mask)
            if m.ndim != 2:
                raise PromptError(f"object {obj_id}: the mask must be (H, W), got shape {m.shape}")
            if not m.any():
                raise PromptError(f"object {obj_id}: the mask on frame {frame} is empty")
            p.mask = m.astype(bool)
        if box is not None:
            if p.box is not None:
                raise PromptError(f"object id {obj_id} already has a box on frame {frame}: give each box its own object id")
            p.box = np.asarray(box, dtype=np.float64)
        if points is not None:
            pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
            lab = np.ones(len(pts), dtype=np.int64) if labels is None else np.asarray(labels).reshape(-1)
            p.points = pts if p.points is None else np.concatenate([p.points, pts])
            p.labels = lab if p.labels is None else np.concatenate([p.labels, lab])

    def __len__(self) -> int:
        return len(self.objects)

    def validate(self, n_frames: int, size: Tuple[int, int]) -> List[ObjectPrompt]:
        """Check every prompt against the video (frame range, coordinates, mask size)."""
        if not self.objects:
            raise PromptError("no prompts: prompt at least one object (points, a box or a mask)")
        h, w = size
        for p in self.objects.values():
            if p.frame >= n_frames:
                raise PromptError(f"object {p.obj_id} is prompted on frame {p.frame}, but the video has {n_frames} frames (0..{n_frames - 1})")
            if p.mask is not None and p.mask.shape != (h, w):
                raise PromptError(f"object {p.obj_id}: the mask is {p.mask.shape[1]}x{p.mask.shape[0]} but the frames are {w}x{h}")
            if p.points is not None:
                p.points, p.labels = check_points(p.points, p.labels, size)
                if not (p.labels >= 0).all():
                    raise PromptError(f"object {p.obj_id}: point labels are 1 (foreground) or 0 (background)")
                if p.box is None and not (p.labels == 1).any():
                    raise PromptError(f"object {p.obj_id}: give at least one foreground point (label 1) or a box")
            if p.box is not None:
                p.box = check_boxes(p.box, size)[0]
        return sorted(self.objects.values(), key=lambda p: p.obj_id)


# ---------------------------------------------------------------------------- results
@dataclass
class FrameResult:
    """The masks of one frame: ``masks[obj_id]`` (H, W) bool, ``scores[obj_id]`` the predicted
    IoU (1.0 for a given mask, 0.0 for an empty one), ``points[obj_id]`` the visible tracked
    query points ((N, 2) XY, labels (N,)) where the strategy tracks points."""

    index: int
    masks: Dict[int, np.ndarray]
    scores: Dict[int, float]
    points: Dict[int, Tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def label_map(self, size: Optional[Tuple[int, int]] = None) -> np.ndarray:
        """(H, W) uint8 label image (0 background, obj_id elsewhere; ids must be < 256).
        Where masks overlap, the higher score wins (ties: the lower id)."""
        if size is None:
            size = next(iter(self.masks.values())).shape if self.masks else (0, 0)
        labels = np.zeros(size, dtype=np.uint8)
        best = np.full(size, -np.inf, dtype=np.float32)
        for obj_id in sorted(self.masks, key=lambda o: (-self.scores.get(o, 0.0), o)):
            if obj_id > 255:
                raise ValueError(f"object id {obj_id} does not fit a uint8 label image (ids 1..255)")
            m = self.masks[obj_id] & (best == -np.inf)
            labels[m] = obj_id
            best[m] = self.scores.get(obj_id, 0.0)
        return labels
