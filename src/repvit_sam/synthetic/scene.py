"""Synthetic scenes (one image) and videos with exact visible-instance annotations.

Objects are painted back to front with hard masks; an object's annotation is the set of its
pixels that no later object covers (its visible part), so the annotations are disjoint and
agree with the painted image pixel for pixel. All randomness comes from the ``rng`` passed in:
the same generator state gives the same arrays, whatever the platform's hash order or threads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from .shapes import KINDS, Footprint, Pose, Shape, rasterise, sample_shape
from .textures import ObjectTexture, background, object_textures


@dataclass
class Scene:
    """One synthetic image and its instances.

    * ``image``: (H, W, 3) uint8 RGB.
    * ``id_map``: (H, W) uint8; 0 = background, k = instance k (1-based, in ``masks`` order).
    * ``masks``: (K, H, W) bool visible masks, disjoint, none empty; ``masks[k - 1] == (id_map == k)``.
    * ``categories``: K shape kinds (names from :data:`repvit_sam.synthetic.KINDS`).
    * ``colors``: (K, 3) uint8, each instance's colour at full pattern brightness (its hue is the
      hue of every pixel of the instance).
    * ``full_areas``: K ints, each instance's pixels in the image before occlusion.
    """

    image: np.ndarray
    id_map: np.ndarray
    masks: np.ndarray
    categories: List[str]
    colors: np.ndarray
    full_areas: List[int]


@dataclass
class _Object:
    shape: Shape
    texture: ObjectTexture
    ref_scale: float


def _paint(image: np.ndarray, id_map: np.ndarray, fp: Footprint, obj: _Object, obj_id: int) -> None:
    """Paint one posed object over ``image`` / ``id_map`` (in place)."""
    if not fp.pixels:
        return
    win = (slice(fp.y0, fp.y1), slice(fp.x0, fp.x1))
    colours = obj.texture.render(fp.u, fp.v, obj.ref_scale)  # (h, w, 3)
    image[win][fp.inside] = colours[fp.inside]
    id_map[win][fp.inside] = obj_id


def _size_scale(height: int, width: int) -> float:
    return min(height, width) / 256.0


def make_scene(
    rng: np.random.Generator,
    height: int = 256,
    width: int = 256,
    *,
    min_objects: int = 3,
    max_objects: int = 8,
    min_area: float = 0.004,
    max_area: float = 0.5,
    min_visible: float = 0.5,
) -> Scene:
    """A textured background with ``min_objects``..``max_objects`` shapes, some occluding others.

    Target areas are drawn log-uniformly in [``min_area``, ``max_area``] of the image (at 256 px
    the defaults span ~16x16 px to half the image) and placed largest first, each with random
    position and rotation. A placement is retried (up to 30 times, then the object is dropped)
    when more than 30% of the new shape would fall outside the image or when it would leave an
    earlier object with less than ``min_visible`` of its pixels visible (or under 40 px), so every
    annotated object is mostly visible. Returns a :class:`Scene`.
    """
    if not 1 <= min_objects <= max_objects <= 254:
        raise ValueError(f"need 1 <= min_objects <= max_objects <= 254, got {min_objects}, {max_objects}")
    px = _size_scale(height, width)
    n = int(rng.integers(min_objects, max_objects + 1))
    areas = np.sort(np.exp(rng.uniform(math.log(min_area), math.log(max_area), n)))[::-1] * height * width
    textures = object_textures(rng, n, px)
    image = background(rng, height, width)
    id_map = np.zeros((height, width), dtype=np.uint8)
    kinds: List[str] = []
    colours: List[np.ndarray] = []
    full: List[int] = []
    min_px = 40 * px * px
    for target, texture in zip(areas, textures):
        for _ in range(30):
            shape, scale = sample_shape(rng, float(target), 0.55 * min(height, width), px)
            r = 0.5 * scale  # centres keep at least half the shape's radius inside
            cx = rng.uniform(min(r, width / 2), max(width - 1 - r, width / 2))
            cy = rng.uniform(min(r, height / 2), max(height - 1 - r, height / 2))
            pose = Pose(float(cx), float(cy), float(rng.uniform(0, 2 * math.pi)), scale)
            fp = rasterise(shape, pose, height, width)
            if fp.pixels < max(min_px, 0.7 * shape.area(scale)):
                continue
            trial = id_map.copy()
            trial[fp.y0 : fp.y1, fp.x0 : fp.x1][fp.inside] = len(kinds) + 1
            counts = np.bincount(trial.ravel(), minlength=len(kinds) + 2)[1 : len(kinds) + 1]
            if all(c >= max(min_px, min_visible * f) for c, f in zip(counts, full)):
                _paint(image, id_map, fp, _Object(shape, texture, scale), len(kinds) + 1)
                kinds.append(shape.kind)
                colours.append(np.rint(np.asarray(texture.rgb)).astype(np.uint8))
                full.append(fp.pixels)
                break
    k = len(kinds)
    masks = id_map[None] == np.arange(1, k + 1, dtype=np.uint8)[:, None, None]
    return Scene(image, id_map, masks, kinds, np.array(colours, dtype=np.uint8).reshape(k, 3), full)


# ---------------------------------------------------------------------------------------- video
@dataclass
class Video:
    """A synthetic sequence.

    * ``frames``: (T, H, W, 3) uint8 RGB.
    * ``id_maps``: (T, H, W) uint8; 0 = background, k = object k (1..K) as DAVIS numbers them.
      An object absent from a frame (off-screen or hidden) has no pixel there.
    * ``categories``: K shape kinds, object k's at index k - 1.
    * ``full_areas``: (T, K) int64, object k's pixels in frame t before occlusion (0 when it is
      off-screen); ``(id_maps[t] == k).sum() <= full_areas[t, k - 1]``, less when occluded.
    * ``reentering``: ids of objects absent from some frames between frames where they are seen
      (off-screen, or hidden behind others); object 1 is among them when ``reenter`` was asked.
    """

    frames: np.ndarray
    id_maps: np.ndarray
    categories: List[str]
    full_areas: np.ndarray
    reentering: List[int] = field(default_factory=list)

    @property
    def num_objects(self) -> int:
        return len(self.categories)


@dataclass
class _Track:
    obj: _Object
    start: np.ndarray  # (2,) XY
    end: np.ndarray  # (2,) XY
    wiggle: Tuple[float, float, float, float]  # amplitude px, period frames, phase, direction
    angle0: float
    spin: float  # radians per frame
    scale_amp: float
    scale_period: float
    scale_phase: float
    exit_to: Optional[np.ndarray] = None  # (2,) XY fully off-screen, for leave-and-re-enter
    exit_gain: float = 1.4

    def max_scale(self) -> float:
        return self.obj.ref_scale * (1.0 + self.scale_amp)

    def pose(self, t: int, num_frames: int) -> Pose:
        s = t / max(1, num_frames - 1)
        if self.exit_to is None:
            centre = self.start + (self.end - self.start) * s
        else:  # out and back: off-screen for the middle part of the sequence
            b = min(1.0, self.exit_gain * (1.0 - math.cos(2 * math.pi * s)) / 2.0)
            centre = self.start + (self.exit_to - self.start) * b
        amp, period, phase, direction = self.wiggle
        off = amp * math.sin(2 * math.pi * t / period + phase)
        cx = float(centre[0] + off * math.cos(direction))
        cy = float(centre[1] + off * math.sin(direction))
        scale = self.obj.ref_scale * (1.0 + self.scale_amp * math.sin(2 * math.pi * t / self.scale_period + self.scale_phase))
        return Pose(cx, cy, self.angle0 + self.spin * t, scale)


def _inside_point(rng: np.random.Generator, r: float, height: int, width: int) -> np.ndarray:
    """A centre that keeps a disk of radius ``r`` inside the frame (the middle if it cannot)."""
    lo_x, hi_x = min(r, width / 2), max(width - 1 - r, width / 2)
    lo_y, hi_y = min(r, height / 2), max(height - 1 - r, height / 2)
    return np.array([rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)])


def _sample_tracks(rng: np.random.Generator, n: int, num_frames: int, height: int, width: int,
                   reenter: bool, min_area: float, max_area: float) -> List[_Track]:
    px = _size_scale(height, width)
    textures = object_textures(rng, n, px)
    tracks: List[_Track] = []
    for i, texture in enumerate(textures):
        target = math.exp(rng.uniform(math.log(min_area), math.log(max_area))) * height * width
        shape, scale = sample_shape(rng, target, 0.3 * min(height, width), px)
        obj = _Object(shape, texture, scale)
        amp = float(rng.uniform(0.1, 0.3))
        r = scale * (1.0 + amp)
        start = _inside_point(rng, r, height, width)
        end = _inside_point(rng, r, height, width)
        if i > 0 and not (reenter and i == 1) and rng.random() < 0.7:
            # Cross the previous object's path: reach where it is at t* at time t*.
            t_star = float(rng.uniform(0.3, 0.7))
            target_xy = tracks[-1].pose(round(t_star * (num_frames - 1)), num_frames)
            cand = start + (np.array([target_xy.cx, target_xy.cy]) - start) / t_star
            if r <= cand[0] <= width - 1 - r and r <= cand[1] <= height - 1 - r:
                end = cand
        track = _Track(
            obj, start, end,
            wiggle=(float(rng.uniform(0, 8)) * px, float(rng.uniform(8, 30)), float(rng.uniform(0, 2 * math.pi)),
                    float(rng.uniform(0, 2 * math.pi))),
            angle0=float(rng.uniform(0, 2 * math.pi)), spin=float(rng.uniform(-0.08, 0.08)),
            scale_amp=amp, scale_period=float(rng.uniform(num_frames, 2 * num_frames)),
            scale_phase=float(rng.uniform(0, 2 * math.pi)),
        )
        if reenter and i == 0:
            side = int(rng.integers(4))  # leave through the left, right, top or bottom edge
            margin = r + 8.0 * px + 3.0  # beyond the wiggle too
            exit_to = start.copy()
            exit_to[side // 2] = -margin if side % 2 == 0 else (width, height)[side // 2] - 1 + margin
            track.exit_to, track.exit_gain = exit_to, float(rng.uniform(1.3, 1.7))
        tracks.append(track)
    return tracks


def _render(tracks: List[_Track], order: List[int], bg: np.ndarray, t: int, num_frames: int
            ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame t: (H, W, 3) image, (H, W) id map, (K,) unoccluded pixel counts."""
    height, width = bg.shape[:2]
    frame = bg.copy()
    ids = np.zeros((height, width), dtype=np.uint8)
    full = np.zeros(len(tracks), dtype=np.int64)
    for k in order:  # back to front
        fp = rasterise(tracks[k].obj.shape, tracks[k].pose(t, num_frames), height, width)
        _paint(frame, ids, fp, tracks[k].obj, k + 1)
        full[k] = fp.pixels
    return frame, ids, full


def make_video(
    rng: np.random.Generator,
    height: int = 240,
    width: int = 320,
    *,
    num_frames: Optional[int] = None,
    num_objects: Optional[int] = None,
    reenter: Optional[bool] = None,
    min_area: float = 0.01,
    max_area: float = 0.1,
) -> Video:
    """A sequence of 1-4 (``num_objects``) textured shapes moving over a still background.

    Each object glides between two points with a sideways wiggle, spins, and breathes in scale
    (+-10-30%); about 70% of the objects after the first cross the previous object's path, and a
    random fixed depth order makes them occlude each other. With ``reenter`` (None: a coin
    flip) object 1 leaves the frame entirely through a random edge, stays out for a stretch of
    frames, and comes back the way it went. ``num_frames`` defaults to
    24-40. Object sizes are log-uniform in [``min_area``, ``max_area``] of the frame. Sampling is
    retried until every object shows at least 60% of itself in frame 0 (the DAVIS reference
    frame) and, with ``reenter``, object 1 is seen again after its absence.
    """
    T = int(num_frames) if num_frames is not None else int(rng.integers(24, 41))
    if T < 8:
        raise ValueError(f"num_frames must be >= 8 (a leave-and-re-enter needs room), got {T}")
    n = int(num_objects) if num_objects is not None else int(rng.integers(1, 5))
    if not 1 <= n <= 254:
        raise ValueError(f"num_objects must be in 1..254, got {n}")
    want_reenter = bool(rng.random() < 0.5) if reenter is None else bool(reenter)
    bg = background(rng, height, width)
    for _ in range(100):
        tracks = _sample_tracks(rng, n, T, height, width, want_reenter, min_area, max_area)
        order = [int(k) for k in rng.permutation(n)]
        frame0, ids0, full0 = _render(tracks, order, bg, 0, T)
        counts = np.bincount(ids0.ravel(), minlength=n + 1)[1:]
        if any(c < max(40, 0.6 * f) for c, f in zip(counts, full0)):
            continue
        frames, id_maps, fulls = [frame0], [ids0], [full0]
        for t in range(1, T):
            f, m, a = _render(tracks, order, bg, t, T)
            frames.append(f)
            id_maps.append(m)
            fulls.append(a)
        maps = np.stack(id_maps)
        reentering = [k for k in range(1, n + 1) if _leaves_and_returns((maps == k).any(axis=(1, 2)))]
        if want_reenter and 1 not in reentering:
            continue
        return Video(np.stack(frames), maps, [tr.obj.shape.kind for tr in tracks], np.stack(fulls), reentering)
    raise RuntimeError("could not sample a video meeting the constraints in 100 tries; try a larger --size")


def _leaves_and_returns(present: np.ndarray) -> bool:
    """True if a visible stretch is followed by absence and then presence again."""
    idx = np.flatnonzero(present)
    return idx.size > 0 and bool((~present[idx[0] : idx[-1] + 1]).any())


__all__ = ["KINDS", "Scene", "Video", "make_scene", "make_video"]
