"""Deterministic synthetic scenes and videos with exact visible-instance masks.

``make_scene(rng, height, width)`` -> :class:`Scene`; ``make_video(rng, height, width)`` ->
:class:`Video`; ``write_images`` / ``write_video`` write COCO + SA-1B and DAVIS 2017 + YouTube-VIS
layouts (``repvit-sam synth images|video``). See ``docs/synthetic.md``.
"""

from .scene import Scene, Video, make_scene, make_video
from .shapes import KINDS
from .textures import SPREAD_THRESHOLD
from .writers import box_xywh, davis_palette, scene_rng, write_images, write_video

__all__ = [
    "KINDS", "SPREAD_THRESHOLD", "Scene", "Video", "box_xywh", "davis_palette", "make_scene", "make_video",
    "scene_rng", "write_images", "write_video",
]
