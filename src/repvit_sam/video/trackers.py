"""Point trackers: follow query points from frame to frame and say which are still visible.

The video predictor talks to a tracker through four calls (:class:`PointTracker`), in the
order the frames of one sweep arrive (forward, or backward: the tracker does not care):

    tracker.reset(frame0)                     # the sweep's first frame
    tracker.set_points(obj_id, points)        # (N, 2) XY pixels on the current frame; replaces
    tracked = tracker.step(frame1)            # {obj_id: (points (N, 2), visible (N,) bool)}
    tracker.remove(obj_id)

The default, :class:`LucasKanadeTracker`, needs no learned weights: OpenCV's pyramidal
Lucas-Kanade flow on a grayscale copy of each frame (downscaled so its long side is at most
``max_side``), with a forward-backward check: a point is visible when the flow found it, the
flow from its new position back to the previous frame lands within ``fb_threshold`` pixels of
where it started, and it is inside the frame (more than ``border`` of the size away from the
edges). A point that fails once stays invisible until the predictor re-initialises the
object's points (it keeps its last position). Each frame is converted and resized once; it
serves the forward flow into it and the backward flow out of it.

Plugging in a learned tracker (PIPs, CoTracker, TAPIR) where its weights exist: write a class
with the same four methods and pass it as ``VideoPredictor(..., tracker=MyTracker())``. An
online tracker keeps a window of recent frames in ``step`` and runs its model over the window
(CoTracker's online mode, for example, every few frames, returning its latest estimates in
between); its occlusion output gives ``visible``. Points are in pixels of the full frame; the
tracker may work on any internal resolution. Learned trackers also re-find points after an
occlusion, which this Lucas-Kanade tracker cannot (the predictor's re-detection covers that).
"""

from __future__ import annotations

from typing import Dict, Hashable, Optional, Protocol, Tuple

import numpy as np

TrackedPoints = Dict[Hashable, Tuple[np.ndarray, np.ndarray]]


class PointTracker(Protocol):
    """What :class:`repvit_sam.video.VideoPredictor` needs from a point tracker."""

    def reset(self, frame: np.ndarray) -> None:
        """Start a sweep at ``frame`` ((H, W, 3) uint8 RGB); forget every point."""

    def set_points(self, key: Hashable, points: np.ndarray) -> None:
        """Track ``points`` ((N, 2) float XY pixels on the current frame) under ``key``, replacing
        any points it had; they start visible."""

    def remove(self, key: Hashable) -> None:
        """Stop tracking ``key`` (no error if unknown)."""

    def step(self, frame: np.ndarray) -> TrackedPoints:
        """Advance to the next frame of the sweep; return every key's (points (N, 2) XY float,
        visible (N,) bool) on it."""


def _import_cv2():
    try:
        import cv2
    except ImportError:
        raise ImportError("the Lucas-Kanade point tracker needs OpenCV: pip install 'repvit-sam[video]'") from None
    return cv2


class LucasKanadeTracker:
    """OpenCV pyramidal Lucas-Kanade with a forward-backward check (see the module docstring).

    win_size: LK window side in tracking pixels; max_level: pyramid levels above the base;
    fb_threshold: largest forward-backward error (tracking pixels) of a visible point;
    max_side: long side of the grayscale frames the flow runs on (full frame if smaller);
    border: points closer to the frame edge than this fraction of its size are invisible.
    """

    def __init__(self, win_size: int = 21, max_level: int = 3, fb_threshold: float = 1.0, max_side: int = 640,
                 border: float = 0.01) -> None:
        self.cv2 = _import_cv2()
        self.win = (int(win_size), int(win_size))
        self.max_level = int(max_level)
        self.fb_threshold = float(fb_threshold)
        self.max_side = int(max_side)
        self.border = float(border)
        self.criteria = (self.cv2.TERM_CRITERIA_EPS | self.cv2.TERM_CRITERIA_COUNT, 30, 0.01)
        self._gray_prev: Optional[np.ndarray] = None
        self._scale = 1.0
        self._size = (0, 0)
        self._points: Dict[Hashable, np.ndarray] = {}  # (N, 2) XY, full-frame pixels
        self._visible: Dict[Hashable, np.ndarray] = {}  # (N,) bool

    def _gray(self, frame: np.ndarray) -> np.ndarray:
        cv2 = self.cv2
        h, w = frame.shape[:2]
        self._size = (h, w)
        gray = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame
        self._scale = min(1.0, self.max_side / max(h, w))
        if self._scale < 1.0:
            size = (max(1, round(w * self._scale)), max(1, round(h * self._scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(gray)

    def reset(self, frame: np.ndarray) -> None:
        self._gray_prev = self._gray(frame)
        self._points.clear()
        self._visible.clear()

    def set_points(self, key: Hashable, points: np.ndarray) -> None:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        self._points[key] = pts.copy()
        self._visible[key] = self._inside(pts)

    def remove(self, key: Hashable) -> None:
        self._points.pop(key, None)
        self._visible.pop(key, None)

    def _inside(self, pts: np.ndarray) -> np.ndarray:
        h, w = self._size
        mx, my = self.border * w, self.border * h
        return (pts[:, 0] >= mx) & (pts[:, 0] <= w - 1 - mx) & (pts[:, 1] >= my) & (pts[:, 1] <= h - 1 - my)

    def step(self, frame: np.ndarray) -> TrackedPoints:
        if self._gray_prev is None:
            raise RuntimeError("LucasKanadeTracker.reset(first_frame) must be called before step()")
        cv2 = self.cv2
        prev, scale = self._gray_prev, self._scale
        nxt = self._gray(frame)
        keys = [k for k in self._points if self._visible[k].any()]
        if keys:
            sel = [np.flatnonzero(self._visible[k]) for k in keys]
            p0 = np.concatenate([self._points[k][s] for k, s in zip(keys, sel)]).astype(np.float32) * scale
            p0 = p0.reshape(-1, 1, 2)
            p1, st1, _ = cv2.calcOpticalFlowPyrLK(prev, nxt, p0, None, winSize=self.win,
                                                  maxLevel=self.max_level, criteria=self.criteria)
            p0b, st2, _ = cv2.calcOpticalFlowPyrLK(nxt, prev, p1, None, winSize=self.win,
                                                   maxLevel=self.max_level, criteria=self.criteria)
            fb = np.linalg.norm((p0b - p0).reshape(-1, 2), axis=1)
            ok = (st1.reshape(-1) == 1) & (st2.reshape(-1) == 1) & (fb < self.fb_threshold)
            moved = p1.reshape(-1, 2).astype(np.float64) / scale
            ok &= np.isfinite(moved).all(axis=1)
            start = 0
            for k, s in zip(keys, sel):
                n = len(s)
                good = ok[start : start + n]
                pts = self._points[k]
                pts[s[good]] = moved[start : start + n][good]
                vis = self._visible[k]
                vis[s] = good
                vis[s[good]] &= self._inside(pts[s[good]])
                start += n
        self._gray_prev = nxt
        return {k: (self._points[k].copy(), self._visible[k].copy()) for k in self._points}
