"""The automatic mask generator's options: one dataclass whose fields carry each option's
default, bounds and help. The constructor, the ``everything`` command line and the web demo's
request schema are all built from it, so a default or a bound is written once.

>>> AmgOptions(points_per_side=16).check()          # raises ValueError naming a bad field
>>> AmgOptions.add_arguments(parser)                  # --points-per-side, --pred-iou-thresh, ...
>>> AmgOptions.from_namespace(args)                   # back from argparse
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
IMPLS = ("fast", "reference")
PRECISIONS = ("fp32", "bf16")
SAMPLINGS = ("grid", "coarse-to-fine")


def _opt(default: Any, help: str, *, lo: Optional[float] = None, hi: Optional[float] = None,
         choices: Tuple[str, ...] = (), group: str = "generator", cli: bool = True, integer: Optional[bool] = None) -> Any:
    """A dataclass field with its bounds and help in ``metadata``; ``integer`` defaults to
    whether the annotation is an int."""
    meta = {"help": help, "lo": lo, "hi": hi, "choices": choices, "group": group, "cli": cli, "integer": integer}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class AmgOptions:
    """segment_anything's ``SamAutomaticMaskGenerator`` parameters (same names and defaults),
    then this package's speed options, then SAM 2's mask-to-mask refinement (``use_m2m``)."""

    points_per_side: Optional[int] = _opt(32, "points per side of the prompt grid (points_per_side^2 prompts on layer 0)", lo=1)
    points_per_batch: int = _opt(64, "prompts decoded at once (memory vs speed)", lo=1)
    pred_iou_thresh: float = _opt(0.88, "keep masks whose predicted IoU is above this (no filter if <= 0)")
    stability_score_thresh: float = _opt(0.95, "keep masks whose stability score is at least this (no filter if <= 0)")
    stability_score_offset: float = _opt(1.0, "logit offset of the stability score", lo=0)
    box_nms_thresh: float = _opt(0.7, "IoU threshold of the box NMS within a crop", lo=0, hi=1)
    crop_n_layers: int = _opt(0, "extra crop layers (layer k: 2^k x 2^k crops)", lo=0)
    crop_nms_thresh: float = _opt(0.7, "IoU threshold of the box NMS across crops", lo=0, hi=1)
    crop_overlap_ratio: float = _opt(512 / 1500, "crop overlap as a fraction of the short image side (layer 1); < 1", lo=0)
    crop_n_points_downscale_factor: int = _opt(1, "layer k uses points_per_side / factor^k points per side", lo=1)
    point_grids: Optional[Tuple[Any, ...]] = _opt(None, "explicit grids, one (N, 2) array in [0, 1] per layer", cli=False)
    min_mask_region_area: int = _opt(0, "if > 0, remove islands and fill holes smaller than this many pixels", lo=0, integer=False)
    output_mode: str = _opt("binary_mask", "segmentation format of each record", choices=OUTPUT_MODES, cli=False)
    impl: str = _opt("fast", "fast: FastDecoder, IoU filter before upscaling; reference: the plain algorithm (slow)",
                     choices=IMPLS, group="speed")
    precision: str = _opt("fp32", "bf16: mask decoder (and, without a backend, image encoder) in bfloat16",
                          choices=PRECISIONS, group="speed")
    sampling: str = _opt("grid", "coarse-to-fine: a sparse grid first, then only the points no mask covers yet",
                         choices=SAMPLINGS, group="speed")
    coarse_points_per_side: Optional[int] = _opt(None, "coarse grid size for coarse-to-fine (default points_per_side // 4)",
                                                 lo=1, group="speed")
    backend: Optional[str] = _opt(None, "image-encoder backend (see `repvit-sam bench`); default: the model as given",
                                  group="speed")
    use_m2m: bool = _opt(False, "decode every candidate mask once more, before the filters, prompted by its point and "
                                "its own low-res logits (SAM 2's use_m2m): masks closer to the objects, at several times "
                                "the decoder's work (every mask is upscaled for its second pass)", group="quality")

    # ------------------------------------------------------------------ validation
    def check(self) -> "AmgOptions":
        """Raise ``ValueError`` naming the first bad option; return ``self``."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata["choices"] and value not in f.metadata["choices"]:
                raise ValueError(f"{f.name} must be one of {', '.join(map(repr, f.metadata['choices']))}; got {value!r}")
            if f.type == "bool" and not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{f.name} must be True or False, got {value!r}")
            if f.type in ("int", "float", "Optional[int]") and value is not None:
                _check_number(f.name, value, f.metadata["lo"], f.metadata["hi"], integer=_is_integer(f))
        if self.impl == "reference" and (self.precision != "fp32" or self.sampling != "grid"):
            raise ValueError("impl='reference' is the plain algorithm: it takes precision='fp32' and sampling='grid' only")
        if self.sampling == "coarse-to-fine" and self.points_per_side is None:
            raise ValueError("sampling='coarse-to-fine' refines a regular grid: give points_per_side, not point_grids")
        if (self.points_per_side is None) == (self.point_grids is None):
            raise ValueError("exactly one of points_per_side and point_grids must be given (set the other to None)")
        if self.crop_overlap_ratio >= 1:
            raise ValueError(f"crop_overlap_ratio must be < 1, got {self.crop_overlap_ratio!r}")
        if self.points_per_side is not None:
            smallest = int(self.points_per_side / (self.crop_n_points_downscale_factor**self.crop_n_layers))
            if smallest < 1:
                raise ValueError(
                    f"points_per_side={self.points_per_side} with crop_n_points_downscale_factor="
                    f"{self.crop_n_points_downscale_factor} leaves no points on crop layer {self.crop_n_layers}"
                )
        if self.sampling == "coarse-to-fine" and self.coarse_points_per_side is not None:
            _check_number("coarse_points_per_side", self.coarse_points_per_side, 1, self.points_per_side, integer=True)
        elif self.sampling != "coarse-to-fine" and self.coarse_points_per_side is not None:
            raise ValueError("coarse_points_per_side applies to sampling='coarse-to-fine' only")
        return self

    def grids(self) -> List[np.ndarray]:
        """The point grid of each crop layer 0..crop_n_layers, (N, 2) XY fractions of the crop."""
        from .utils import build_all_layer_point_grids

        if self.points_per_side is not None:
            return build_all_layer_point_grids(int(self.points_per_side), int(self.crop_n_layers), int(self.crop_n_points_downscale_factor))
        grids = list(self.point_grids)  # type: ignore[arg-type]
        if len(grids) != self.crop_n_layers + 1:
            raise ValueError(f"point_grids must hold one grid per crop layer ({self.crop_n_layers + 1}), got {len(grids)}")
        checked = []
        for k, g in enumerate(grids):
            arr = np.asarray(g, dtype=np.float64)
            if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
                raise ValueError(f"point_grids[{k}] must be a non-empty (N, 2) array of XY in [0, 1], got shape {arr.shape}")
            if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
                raise ValueError(f"point_grids[{k}] values must lie in [0, 1] (fractions of the crop size)")
            checked.append(arr)
        return checked

    @property
    def coarse_side(self) -> Optional[int]:
        """The coarse grid's points per side (coarse-to-fine sampling only)."""
        if self.sampling != "coarse-to-fine":
            return None
        return int(self.coarse_points_per_side or max(1, int(self.points_per_side or 0) // 4))

    # ------------------------------------------------------------------ argparse
    @classmethod
    def cli_fields(cls) -> Iterable[dataclasses.Field]:
        return (f for f in dataclasses.fields(cls) if f.metadata["cli"])

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One ``--option-name`` per field (groups "generator", "speed" and "quality"; a bool is a flag), defaults and help
        from the fields."""
        groups: Dict[str, Any] = {
            "generator": parser.add_argument_group("generator (segment_anything's SamAutomaticMaskGenerator parameters)"),
            "speed": parser.add_argument_group("speed"),
            "quality": parser.add_argument_group("mask quality"),
        }
        for f in cls.cli_fields():
            kwargs: Dict[str, Any] = {"default": f.default, "help": f"{f.metadata['help']} (default {f.default})"}
            if f.type == "bool":
                kwargs.update(action="store_true", help=f.metadata["help"])
            elif f.metadata["choices"]:
                kwargs["choices"] = f.metadata["choices"]
            elif "int" in f.type:
                kwargs["type"] = int
            elif "float" in f.type:
                kwargs["type"] = float
            groups[f.metadata["group"]].add_argument("--" + f.name.replace("_", "-"), **kwargs)

    @classmethod
    def from_namespace(cls, args: argparse.Namespace, **overrides: Any) -> "AmgOptions":
        values = {f.name: getattr(args, f.name) for f in cls.cli_fields() if hasattr(args, f.name)}
        return cls(**{**values, **overrides}).check()


def _is_integer(f: dataclasses.Field) -> bool:
    explicit = f.metadata["integer"]
    return ("int" in str(f.type)) if explicit is None else bool(explicit)


def _check_number(name: str, value: Any, lo: Optional[float] = None, hi: Optional[float] = None, integer: bool = False) -> None:
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.integer, np.floating))
    if isinstance(value, bool) or not ok_type:
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if lo is not None and value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise ValueError(f"{name} must be <= {hi}, got {value!r}")
