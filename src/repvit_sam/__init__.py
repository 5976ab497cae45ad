"""repvit_sam: RepViT-SAM, MobileSAM and SAM, checkpoint-exact, in one package.

>>> import repvit_sam
>>> model = repvit_sam.build_sam("repvit", checkpoint="repvit_sam.pt")
>>> predictor = repvit_sam.SamPredictor(repvit_sam.fuse_model(model))

The names below are imported on first use (PEP 562), so that torch-free parts of the package
(:mod:`repvit_sam.onnx_runtime`, which runs exported ONNX models with numpy and onnxruntime
only) can be imported where torch is not installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the submodule that defines it
_LAZY = {
    "VARIANTS": ".config",
    "SamConfig": ".config",
    "SamAutomaticMaskGenerator": ".inference.amg",
    "AmgOptions": ".inference.amg",
    "SamPredictor": ".inference.predictor",
    "ResizeLongestSide": ".inference.transforms",
    "fuse_model": ".modeling.fuse",
    "Sam": ".modeling.sam",
    "build_from_config": ".registry",
    "build_sam": ".registry",
    "list_models": ".registry",
    "sam_model_registry": ".registry",
    "CheckpointError": ".weights",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .config import VARIANTS, SamConfig
    from .inference.amg import AmgOptions, SamAutomaticMaskGenerator
    from .inference.predictor import SamPredictor
    from .inference.transforms import ResizeLongestSide
    from .modeling.fuse import fuse_model
    from .modeling.sam import Sam
    from .registry import build_from_config, build_sam, list_models, sam_model_registry
    from .weights import CheckpointError


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    try:  # ``import repvit_sam; repvit_sam.hub.…`` keeps working as with eager imports
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))
