"""repvit_sam: RepViT-SAM, MobileSAM and SAM, checkpoint-exact, in one package.

>>> import repvit_sam
>>> model = repvit_sam.build_sam("repvit", checkpoint="repvit_sam.pt")
>>> predictor = repvit_sam.SamPredictor(repvit_sam.fuse_model(model))
"""

from .config import VARIANTS, SamConfig
from .inference.automatic import SamAutomaticMaskGenerator
from .inference.predictor import SamPredictor
from .inference.transforms import ResizeLongestSide
from .modeling.fuse import fuse_model
from .modeling.sam import Sam
from .registry import build_from_config, build_sam, list_models, sam_model_registry
from .weights import CheckpointError

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ResizeLongestSide",
    "Sam",
    "SamAutomaticMaskGenerator",
    "SamConfig",
    "SamPredictor",
    "VARIANTS",
    "build_from_config",
    "build_sam",
    "fuse_model",
    "list_models",
    "sam_model_registry",
]
