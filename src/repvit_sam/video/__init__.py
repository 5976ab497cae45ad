"""Video: track prompted objects through a video with an image SAM (SAM-PT-style point
tracking or mask propagation). See :mod:`repvit_sam.video.predictor`.

Nothing heavy is imported here beyond torch and numpy; PyAV and OpenCV (the ``video`` extra)
load when a video file is opened or the Lucas-Kanade tracker is made.
"""

from .frames import ArrayFrames, FolderFrames, FrameError, FrameSource, VideoFileFrames, open_frames
from .options import VideoOptions
from .predictor import VideoPredictor
from .prompts import FrameResult, ObjectPrompt, Prompts
from .trackers import LucasKanadeTracker, PointTracker

__all__ = [
    "ArrayFrames", "FolderFrames", "FrameError", "FrameResult", "FrameSource", "LucasKanadeTracker", "ObjectPrompt",
    "PointTracker", "Prompts", "VideoFileFrames", "VideoOptions", "VideoPredictor", "open_frames",
]
