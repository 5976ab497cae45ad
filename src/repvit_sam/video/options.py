"""The options of video tracking: one dataclass feeding the constructor and the command lines."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Optional

if TYPE_CHECKING:
    import torch

STRATEGIES = ("points", "mask")
DECODER_PRECISIONS = ("auto", "fp32", "bf16")


def _opt(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class VideoOptions:
    """How :class:`repvit_sam.video.VideoPredictor` carries objects from frame to frame.

    The defaults are SAM-PT's settings (Rajic et al. 2023) where it has one.
    """

    strategy: str = _opt("points", "points: SAM-PT point tracking; mask: the previous mask's box, points and logits prompt the next frame",
                         choices=STRATEGIES)
    positive_points: int = _opt(8, "positive query points per object (K-Medoids on the mask)")
    negative_points: int = _opt(1, "negative query points per object (K-Medoids on the inverted mask)")
    other_objects_negative: bool = _opt(True, "the other objects' visible positive points are negatives (points strategy)")
    refine_iters: int = _opt(12, "refinement passes per frame, each adding the current mask's box and logits")
    iou_threshold: float = _opt(0.7, "a mask whose predicted IoU is below this is empty")
    reinit_every: int = _opt(0, "re-initialise query points from the current mask every K frames (0: never)")
    reinit_below: float = _opt(0.5, "re-initialise an object's query points when fewer than this fraction of its positive points are visible")
    mask_points: int = _opt(1, "positive points from the previous mask (mask strategy): 1 = its medoid, more = K-Medoids")
    redetect: bool = _opt(True, "look for an object whose mask came out empty by its appearance (embedding prototype)")
    redetect_threshold: float = _opt(0.8, "cosine similarity to the object's prototype needed to re-detect it")
    exclusive: bool = _opt(True, "two objects whose masks cover mostly the same region: it goes to the one whose prototype it resembles more")
    verify_threshold: float = _opt(0.3, "a tracked mask whose prototype's cosine similarity to the object's is below this is empty (-1: off)")
    decoder_precision: str = _opt("auto", "mask decoder arithmetic: fp32, bf16, or auto = bf16 when the encoder backend computes in bf16 "
                                  "(its name has bf16), else fp32", choices=DECODER_PRECISIONS)
    seed: int = _opt(0, "seed of the K-Medoids initialisation")

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.decoder_precision not in DECODER_PRECISIONS:
            raise ValueError(f"decoder_precision must be one of {', '.join(DECODER_PRECISIONS)}, got {self.decoder_precision!r}")
        for name in ("positive_points", "mask_points"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("negative_points", "refine_iters", "reinit_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("iou_threshold", "reinit_below"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("redetect_threshold", "verify_threshold"):
            if not -1.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [-1, 1], got {getattr(self, name)}")


def _bool(text: str) -> bool:
    v = text.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--option`` per field of :class:`VideoOptions` (``--refine-iters 0``, ``--redetect false``)."""
    g = parser.add_argument_group("tracking (VideoOptions)")
    for f in dataclasses.fields(VideoOptions):
        kind = {"int": int, "float": float, "bool": _bool, "str": str}[f.type if isinstance(f.type, str) else f.type.__name__]
        metavar = None if f.metadata.get("choices") else {int: "N", float: "X", str: "S"}.get(kind, "BOOL")
        g.add_argument("--" + f.name.replace("_", "-"), dest=f"video_{f.name}", type=kind, default=f.default, metavar=metavar,
                       choices=f.metadata.get("choices"), help=f"{f.metadata['help']} (default {f.default})")


def from_args(args: argparse.Namespace) -> VideoOptions:
    """The :class:`VideoOptions` given on the command line (a bad value: ``UsageError``)."""
    from ..cli import UsageError

    values: Dict[str, Any] = {f.name: getattr(args, f"video_{f.name}") for f in dataclasses.fields(VideoOptions)}
    try:
        return VideoOptions(**values)
    except ValueError as e:
        raise UsageError(str(e)) from None


def decoder_dtype(precision: str, backend: Optional[str]) -> torch.dtype:
    """The mask decoder's dtype for ``VideoOptions.decoder_precision`` with this encoder backend:
    ``auto`` follows the encoder (bfloat16 for the ``*bf16*`` backends, whose embeddings already
    carry bfloat16 rounding, and which are the default only where the hardware computes bfloat16
    natively), else float32."""
    import torch

    if precision == "auto":
        precision = "bf16" if backend is not None and "bf16" in backend else "fp32"
    return torch.bfloat16 if precision == "bf16" else torch.float32
