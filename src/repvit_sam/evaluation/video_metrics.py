"""Video segmentation metrics: DAVIS 2017 J and F, and spatio-temporal-IoU average recall.

**DAVIS** (semi-supervised; the definitions of davis2017-evaluation, written anew here):

* J (region similarity) of one object on one frame: IoU of the predicted and true masks; an
  empty union counts as 1.
* F (contour accuracy): boundaries of both masks by Martin's ``seg2bmap`` (a pixel is boundary
  when it differs from its right, lower or lower-right neighbour; the last row compares only
  to the right, the last column only downward, the corner pixel never), each dilated by a disk
  of radius ``ceil(0.008 x image diagonal)`` (pixels within that Euclidean distance); precision
  = predicted boundary pixels within the true boundary's dilation / predicted boundary pixels,
  recall the other way round; F = 2PR / (P + R), 0 when P + R = 0. No predicted boundary:
  P = 1 (R = 0 if there is a true boundary, else 1); no true boundary: R = 1 (P = 0 if there
  is a predicted one).
* Per object, over the frames scored (all annotated frames but the first and the last): mean;
  recall = fraction of frames above 0.5; decay = mean over the first quarter minus mean over
  the last quarter, the quarters being ``v[ids[i] : ids[i+1] + 1]`` with ``ids =
  round(linspace(1, n, 5) + 1e-10) - 1`` (neighbouring quarters share a frame).
* Global: each statistic averaged over all objects of all sequences; J&F-Mean is the mean of
  J-Mean and F-Mean. Objects are the labels 1..max of the first frame's annotation; an object
  absent from the results is empty on every frame; a result label above that is an error.

(The official code casts the quarter indices to uint8, which wraps for sequences longer than
256 frames; here they are plain integers — identical on DAVIS, whose sequences are shorter.)

**Average recall by spatio-temporal IoU** (video instance segmentation as YouTube-VIS / UVO
evaluate proposals): the IoU of two tracks is the sum over frames of their intersections over
the sum over frames of their unions (a frame where one is absent adds its area to the union
only). Per video, at most ``max_dets`` predictions by descending score are matched greedily to
the ground-truth tracks (each prediction to the unmatched track it overlaps most, at or above
the threshold); recall at a threshold = matched tracks / tracks, pooled over videos; AR =
recall averaged over thresholds 0.50:0.05:0.95. Size ranges use a track's mean area over the
frames where it is present: small < 32², medium 32²..96², large > 96² (COCO's bounds);
tracks outside the range are ignored, and so are crowd tracks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

BOUND_TH = 0.008
IOU_THRESHOLDS = tuple(np.round(np.linspace(0.5, 0.95, 10), 2))
AREA_RANGES = {"all": (0.0, 1e10), "small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, 1e10)}
DAVIS_KEYS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


# ---------------------------------------------------------------------------- DAVIS J and F
def region_similarity(pred: np.ndarray, gt: np.ndarray) -> float:
    """J: IoU of two (H, W) bool masks; 1.0 when both are empty."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and annotation {gt.shape} differ in size")
    union = np.count_nonzero(pred | gt)
    return 1.0 if union == 0 else np.count_nonzero(pred & gt) / union


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """Martin's one-pixel boundary map of an (H, W) bool mask (see the module docstring)."""
    seg = seg.astype(bool)
    right = np.zeros_like(seg)
    down = np.zeros_like(seg)
    diag = np.zeros_like(seg)
    right[:, :-1] = seg[:, 1:]
    down[:-1, :] = seg[1:, :]
    diag[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ right) | (seg ^ down) | (seg ^ diag)
    b[-1, :] = seg[-1, :] ^ right[-1, :]
    b[:, -1] = seg[:, -1] ^ down[:, -1]
    b[-1, -1] = False
    return b


def boundary_radius(shape: Tuple[int, int], bound_th: float = BOUND_TH) -> float:
    """Tolerance in pixels: ``bound_th`` itself if >= 1, else ceil(bound_th x diagonal)."""
    return float(bound_th) if bound_th >= 1 else float(math.ceil(bound_th * math.hypot(*shape)))


def _dilate_disk(b: np.ndarray, radius: float) -> np.ndarray:
    """Pixels within Euclidean distance ``radius`` of a True pixel of ``b`` (dilation by a disk)."""
    if not b.any():
        return np.zeros_like(b)
    from scipy import ndimage

    return ndimage.distance_transform_edt(~b) <= radius


def contour_accuracy(pred: np.ndarray, gt: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """F: boundary F-measure of two (H, W) bool masks (see the module docstring)."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and annotation {gt.shape} differ in size")
    r = boundary_radius(pred.shape, bound_th)
    fg, gtb = seg2bmap(pred), seg2bmap(gt)
    n_fg, n_gt = int(fg.sum()), int(gtb.sum())
    if n_fg == 0 and n_gt == 0:
        precision = recall = 1.0
    elif n_fg == 0:
        precision, recall = 1.0, 0.0
    elif n_gt == 0:
        precision, recall = 0.0, 1.0
    else:
        precision = np.count_nonzero(fg & _dilate_disk(gtb, r)) / n_fg
        recall = np.count_nonzero(gtb & _dilate_disk(fg, r)) / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def statistics(values: Sequence[float]) -> Tuple[float, float, float]:
    """(mean, recall, decay) of one object's per-frame values (module docstring)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
    recall = float(np.mean(v > 0.5))
    ids = (np.round(np.linspace(1, len(v), 5) + 1e-10) - 1).astype(np.int64)
    bins = [v[ids[i] : ids[i + 1] + 1] for i in range(4)]
    with np.errstate(invalid="ignore"):
        first = np.nanmean(bins[0]) if np.isfinite(bins[0]).any() else math.nan
        last = np.nanmean(bins[3]) if np.isfinite(bins[3]).any() else math.nan
    return mean, recall, float(first - last)


def objects_in(first_frame_labels: np.ndarray) -> int:
    """How many objects a DAVIS sequence has: the largest label of its first annotation (void
    255 counts as background)."""
    labels = np.where(first_frame_labels == 255, 0, first_frame_labels)
    return int(labels.max())


@dataclass
class DavisObject:
    """One object's per-frame J and F over the scored frames, and their statistics."""

    sequence: str
    obj_id: int
    j: np.ndarray
    f: np.ndarray

    def stats(self) -> Dict[str, float]:
        jm, jr, jd = statistics(self.j)
        fm, fr, fd = statistics(self.f)
        return {"J-Mean": jm, "J-Recall": jr, "J-Decay": jd, "F-Mean": fm, "F-Recall": fr, "F-Decay": fd}


def score_sequence(name: str, gt: Sequence[np.ndarray], pred: Sequence[np.ndarray], bound_th: float = BOUND_TH) -> List[DavisObject]:
    """Score one sequence. gt / pred: the label images (H, W) of every annotated frame, in
    order, first and last included (they are not scored). Objects: 1..max label of gt[0]."""
    if len(gt) != len(pred):
        raise ValueError(f"{name}: {len(pred)} result frames for {len(gt)} annotated frames")
    n_obj = objects_in(gt[0])
    frames = range(1, len(gt) - 1)
    biggest = max((int(pred[t].max()) for t in frames if pred[t].size), default=0)
    if biggest > n_obj:
        raise ValueError(f"{name}: the results have object label {biggest} but the sequence has {n_obj} objects "
                         "(labels 1..N of the first frame's annotation)")
    out = []
    for k in range(1, n_obj + 1):
        j = np.zeros(len(frames))
        f = np.zeros(len(frames))
        for i, t in enumerate(frames):
            g = gt[t] == k
            p = pred[t] == k
            j[i] = region_similarity(p, g)
            f[i] = contour_accuracy(p, g, bound_th)
        out.append(DavisObject(name, k, j, f))
    return out


def davis_summary(objects: Sequence[DavisObject]) -> Dict[str, float]:
    """The global figures under their official names (mean over all objects)."""
    if not objects:
        return {k: math.nan for k in DAVIS_KEYS}
    rows = [o.stats() for o in objects]
    out = {k: float(np.mean([r[k] for r in rows])) for k in DAVIS_KEYS if k != "J&F-Mean"}
    return {"J&F-Mean": (out["J-Mean"] + out["F-Mean"]) / 2, **out}


# ---------------------------------------------------------------------------- spatio-temporal AR
Track = Sequence[Optional[np.ndarray]]  # one (H, W) bool mask per frame, None where absent


def track_areas(track: Track) -> List[int]:
    return [0 if m is None else int(np.count_nonzero(m)) for m in track]


def mean_area(track: Track) -> float:
    """A track's mean area over the frames where it is present (0 if never)."""
    areas = [a for a in track_areas(track) if a > 0]
    return float(np.mean(areas)) if areas else 0.0


def st_iou(a: Track, b: Track) -> float:
    """Spatio-temporal IoU: sum of per-frame intersections / sum of per-frame unions (0 when
    both tracks are empty everywhere)."""
    if len(a) != len(b):
        raise ValueError(f"tracks of different lengths: {len(a)} and {len(b)} frames")
    inter = union = 0
    for x, y in zip(a, b):
        x_any = x is not None and x.any()
        y_any = y is not None and y.any()
        if x_any and y_any:
            inter += int(np.count_nonzero(x & y))
            union += int(np.count_nonzero(x | y))
        elif x_any:
            union += int(np.count_nonzero(x))
        elif y_any:
            union += int(np.count_nonzero(y))
    return inter / union if union > 0 else 0.0


@dataclass
class VideoMatchInput:
    """One video for average recall: the IoU matrix (D, G) between its predictions (sorted by
    descending score, at most max_dets) and its ground-truth tracks, each track's mean area
    (G,) and crowd flag (G,)."""

    ious: np.ndarray
    gt_areas: np.ndarray
    gt_crowd: np.ndarray


def match_video(ious: np.ndarray, ignore: np.ndarray, threshold: float) -> Tuple[int, int]:
    """(matched non-ignored tracks, non-ignored tracks) for one video at one threshold. ious:
    (D, G), predictions in descending score; ignore: (G,) bool. Greedy as COCO: each prediction
    takes the unmatched track of highest IoU >= threshold, preferring non-ignored tracks."""
    d, g = ious.shape
    order = np.argsort(ignore, kind="mergesort")  # non-ignored tracks first
    matched = np.zeros(g, dtype=bool)
    for i in range(d):
        best, m = min(threshold, 1 - 1e-10), -1
        for j in order:
            if matched[j]:
                continue
            if m > -1 and not ignore[m] and ignore[j]:
                break
            if ious[i, j] < best:
                continue
            best, m = ious[i, j], j
        if m > -1:
            matched[m] = True
    keep = ~ignore
    return int(np.count_nonzero(matched & keep)), int(np.count_nonzero(keep))


def average_recall(videos: Sequence[VideoMatchInput], thresholds: Sequence[float] = IOU_THRESHOLDS,
                   area_ranges: Optional[Dict[str, Tuple[float, float]]] = None) -> Dict[str, float]:
    """AR per size range (``AR``, ``AR_small``, ...; NaN where a range has no track), pooled
    over videos and averaged over ``thresholds``."""
    ranges = AREA_RANGES if area_ranges is None else area_ranges
    out: Dict[str, float] = {}
    for name, (lo, hi) in ranges.items():
        recalls = []
        for t in thresholds:
            hit = total = 0
            for v in videos:
                ignore = v.gt_crowd.astype(bool) | (v.gt_areas < lo) | (v.gt_areas > hi)
                h, n = match_video(v.ious, ignore, t)
                hit, total = hit + h, total + n
            recalls.append(hit / total if total else math.nan)
        key = "AR" if name == "all" else f"AR_{name}"
        out[key] = float(np.mean(recalls)) if not all(math.isnan(r) for r in recalls) else math.nan
    return out
