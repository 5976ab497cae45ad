"""Segment everything: the automatic mask generator, in parts.

* :mod:`.options`: :class:`AmgOptions`, every option's default, bounds and help, once;
* :mod:`.utils`: box NMS, point grids, crop boxes, the record store;
* :mod:`.decode`: the two decode strategies (reference and fast) and the shared mask filter;
* :mod:`.generator`: :class:`SamAutomaticMaskGenerator`, with no decode-path branches.

Pure mask functions (RLE, boxes, stability score) are in :mod:`repvit_sam.inference.masks`.
"""

from .generator import SamAutomaticMaskGenerator
from .options import AmgOptions

__all__ = ["AmgOptions", "SamAutomaticMaskGenerator"]
