"""Torch-free checks of on-device exports (``.pte`` / ``.tflite`` folders): the interface
constants and the metadata written beside the files, whose SHA-256 sums tell this package's
files from anyone else's. Imports numpy only (used by the torch-free LiteRT predictor too)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from ..utils import file_sha256

PathLike = Union[str, os.PathLike]

MOBILE_DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input")
MOBILE_DECODER_OUTPUTS = ("iou_predictions", "low_res_masks")
EMPTY_LABEL = -2.0  # a point slot that is not used (masked out of every attention)

# format in metadata.json -> (what, the command that writes it, the files' suffix)
FORMATS: Dict[str, Tuple[str, str, str]] = {
    "repvit-sam-executorch": ("ExecuTorch", "repvit-sam export executorch", ".pte"),
    "repvit-sam-tflite": ("LiteRT", "repvit-sam export tflite", ".tflite"),
}


class MobileModelError(RuntimeError):
    """An on-device export folder that is missing, incomplete or not this package's."""


def read_mobile_export(folder: PathLike, fmt: str, check_files: bool = True) -> Dict[str, Any]:
    """``folder/metadata.json`` of a ``fmt`` export, with each file it lists present and, when
    ``check_files``, equal (SHA-256) to what the export wrote. One-line :class:`MobileModelError`
    otherwise. Returns the metadata."""
    from ..onnx_runtime import read_export_metadata

    what, command, suffix = FORMATS[fmt]
    folder = Path(folder)
    if folder.is_file():
        raise MobileModelError(f"give the folder that holds {folder.name} and its metadata.json (written by '{command}'), not the file")
    meta = read_export_metadata(folder, fmt, what, command, error=MobileModelError)
    for key, fname in meta.get("files", {}).items():
        path = folder / fname
        if not path.is_file():
            raise MobileModelError(f"{path} not found (metadata.json lists it as the {key}); re-run '{command}'")
        if check_files and meta.get("sha256", {}).get(key) != file_sha256(path):
            raise MobileModelError(
                f"{path} is not the {key} that '{command}' wrote into this folder (its SHA-256 differs from metadata.json): "
                f"re-export, or keep each export's files together"
            )
    return meta


def pad_prompt(coords: np.ndarray, labels: np.ndarray, max_points: int) -> Tuple[np.ndarray, np.ndarray]:
    """(N, 2) XY and (N,) labels -> (1, P, 2), (1, P) float32 with the slots after N labelled
    :data:`EMPTY_LABEL` (ignored by the decoder). More than P points: one-line ValueError."""
    coords = np.asarray(coords, dtype=np.float32).reshape(-1, 2)
    labels = np.asarray(labels, dtype=np.float32).reshape(-1)
    n = coords.shape[0]
    if n > max_points:
        raise ValueError(
            f"this prompt needs {n} point slots (clicks, plus 2 for a box or 1 padding point) but the decoder was exported "
            f"with max_points={max_points}: use fewer points or re-export with a larger --max-points"
        )
    pc = np.zeros((1, max_points, 2), np.float32)
    pl = np.full((1, max_points), EMPTY_LABEL, np.float32)
    pc[0, :n], pl[0, :n] = coords, labels
    return pc, pl


def find_export(folder: PathLike) -> Optional[str]:
    """The format of an export folder (from its metadata), or None."""
    import json

    try:
        return json.loads((Path(folder) / "metadata.json").read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError, AttributeError):
        return None
