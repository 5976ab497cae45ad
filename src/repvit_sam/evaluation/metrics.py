"""Metrics: mask IoU / mIoU, COCO segmentation AP (pycocotools), BSDS edge ODS / OIS / AP /
R50 (pyEdgeEval's pixel correspondence), salient-object MAE / S-measure / max F-measure
(pysodmetrics) and pixel-level max-F1 (anomaly segmentation)."""

from __future__ import annotations

import contextlib
import io
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

def require(module: str) -> Any:
    """Import an optional dependency of the ``eval`` extra (one line naming the extra if missing)."""
    from ..utils import require as require_extra

    return require_extra(module, "eval", what="this evaluation")


def pyedgeeval(module: str = "pyEdgeEval"):
    """Import a pyEdgeEval module quietly: at import it prints a warning to stdout (no mat73)
    and touches a deprecated scipy namespace; neither concerns us."""
    import warnings

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", DeprecationWarning)
        require("pyEdgeEval")
        return require(module)


# ------------------------------------------------------------------------------------ masks


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """|pred & gt| / |pred | gt| of two (H, W) bool masks; 1.0 when both are empty."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {gt.shape}")
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def mean_iou(ious: Sequence[float]) -> float:
    return float(np.mean(ious)) if len(ious) else float("nan")


# ------------------------------------------------------------------------------------ COCO AP

AP_KEYS = ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L")


def coco_segm_ap(gt: Dict[str, Any], results: List[Dict[str, Any]], image_ids: Optional[Sequence[int]] = None) -> Dict[str, float]:
    """COCO mask AP of ``results`` (COCO results: image_id, category_id, segmentation RLE, score)
    against the instances dict ``gt``, over ``image_ids`` (default: all). Values in [0, 100];
    pycocotools reports -1 where a size range has no ground truth: kept as NaN."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {k: 0.0 for k in AP_KEYS}
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes([dict(r) for r in results])  # loadRes writes into the dicts it gets
        ev = COCOeval(coco_gt, coco_dt, iouType="segm")
        if image_ids is not None:
            ev.params.imgIds = sorted(int(i) for i in image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = ev.stats[:6]
    return {k: (float("nan") if v < 0 else float(v) * 100.0) for k, v in zip(AP_KEYS, stats)}


# ------------------------------------------------------------------------------------ edges

EDGE_THRESHOLDS = 99  # the BSDS benchmark's default: 99 thresholds evenly spaced in (0, 1)
BSDS_MAX_DIST = 0.0075  # match tolerance, as a fraction of the image diagonal


def edge_thresholds(n: int = EDGE_THRESHOLDS) -> np.ndarray:
    return np.linspace(1.0 / (n + 1), 1.0 - 1.0 / (n + 1), n)


def edge_counts(pred: np.ndarray, gts: Sequence[np.ndarray], thresholds: int = EDGE_THRESHOLDS, max_dist: float = BSDS_MAX_DIST,
                thin: bool = True) -> np.ndarray:
    """Per-threshold (count_r, sum_r, count_p, sum_p) of an edge map in [0, 1] against several
    human boundary maps, by the BSDS benchmark's bipartite pixel correspondence (pyEdgeEval):
    recall counts matched GT pixels over all annotators, precision counts predicted pixels
    matched to any annotator. Returns a (4, T) array."""
    evaluate_boundaries_threshold_multiple_gts = pyedgeeval("pyEdgeEval.common.binary_label.evaluate_boundaries").evaluate_boundaries_threshold_multiple_gts

    pred = np.asarray(pred, dtype=np.float64)
    gts = [np.asarray(g, dtype=bool) for g in gts]
    for g in gts:
        if g.shape != pred.shape:
            raise ValueError(f"edge map is {pred.shape} but a ground-truth map is {g.shape}")
    counts = evaluate_boundaries_threshold_multiple_gts(edge_thresholds(thresholds), pred, gts, max_dist=max_dist, apply_thinning=thin, apply_nms=False)
    return np.stack([np.asarray(c, dtype=np.float64) for c in counts])


def _prf(count_r, sum_r, count_p, sum_p):
    r = count_r / np.where(sum_r == 0, 1, sum_r)
    p = count_p / np.where(sum_p == 0, 1, sum_p)
    f = 2 * p * r / np.where(p + r == 0, 1, p + r)
    return r, p, f


def edge_scores(per_image: Sequence[np.ndarray], thresholds: int = EDGE_THRESHOLDS) -> Dict[str, float]:
    """ODS, OIS, AP and R50 from the (4, T) counts of each image (the BSDS benchmark's rules).

    ODS: best F over one dataset-wide threshold (interpolated between neighbouring thresholds
    as the benchmark does); OIS: F of the counts summed at each image's own best threshold;
    AP: area under the dataset precision-recall curve (precision interpolated over recall
    0, 0.01, ..., 1, as pyEdgeEval); R50: recall at 50% precision (linear interpolation along
    the curve; 0 if precision never reaches 0.5)."""
    if not per_image:
        raise ValueError("no images to score")
    t = edge_thresholds(thresholds)
    tot = np.sum(per_image, axis=0)
    r, p, f = _prf(*tot)
    # ODS, interpolated between thresholds (101 steps)
    best = (float(f[0]), float(t[0]), float(r[0]), float(p[0]))
    for i in range(1, len(t)):
        d = np.linspace(0, 1, 101)
        ri, pi = r[i] * d + r[i - 1] * (1 - d), p[i] * d + p[i - 1] * (1 - d)
        fi = 2 * pi * ri / np.where(pi + ri == 0, 1, pi + ri)
        k = int(np.argmax(fi))
        if fi[k] > best[0]:
            best = (float(fi[k]), float(t[i] * d[k] + t[i - 1] * (1 - d[k])), float(ri[k]), float(pi[k]))
    # OIS
    acc = np.zeros(4)
    for c in per_image:
        _, _, fi = _prf(*c)
        acc += c[:, int(np.argmax(fi))]
    _, _, f_ois = _prf(*acc)
    # AP (as pyEdgeEval / the BSDS scripts: max precision at recall >= r, r = 0 .. 0.99, / 101)
    ap = sum(float(np.max(p[r >= lvl], initial=0.0)) / 101.0 for lvl in np.arange(0, 1, 0.01))
    # R50: recall where the PR curve crosses precision 0.5 (thresholds ascend: recall falls, precision rises)
    r50 = 0.0
    ok = np.flatnonzero(p >= 0.5)
    if ok.size:
        j = int(ok[0])
        r50 = float(r[j])
        if j > 0 and p[j] != p[j - 1]:
            w = (0.5 - p[j - 1]) / (p[j] - p[j - 1])
            r50 = float(r[j - 1] + w * (r[j] - r[j - 1]))
    return {"ODS": best[0], "ODS_threshold": best[1], "OIS": float(f_ois), "AP": float(ap), "R50": r50}


def image_ois(counts: np.ndarray) -> Tuple[float, int]:
    """(best F, index of its threshold) of one image's counts."""
    _, _, f = _prf(*counts)
    k = int(np.argmax(f))
    return float(f[k]), k


# ------------------------------------------------------------------------------------ SOD


def mae(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean absolute error between a saliency map in [0, 1] and a binary mask."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"saliency map is {pred.shape} but the mask is {gt.shape}")
    return float(np.abs(pred - gt).mean())


class SodMeter:
    """Accumulates MAE (own code), S-measure and max F-measure (pysodmetrics, beta^2 = 0.3) over
    images; saliency maps in [0, 1], masks bool."""

    def __init__(self) -> None:
        import warnings

        sod = require("py_sod_metrics")
        self._s = sod.Smeasure()
        with warnings.catch_warnings():  # "use FmeasureV2": the classic max-F is what SOD papers report
            warnings.simplefilter("ignore")
            self._f = sod.Fmeasure()
        self._mae: List[float] = []

    def step(self, pred: np.ndarray, gt: np.ndarray) -> Dict[str, float]:
        m = mae(pred, gt)
        self._mae.append(m)
        p8 = np.clip(np.round(np.asarray(pred, dtype=np.float64) * 255), 0, 255).astype(np.uint8)
        g8 = np.asarray(gt, dtype=bool).astype(np.uint8) * 255
        self._s.step(pred=p8, gt=g8)
        self._f.step(pred=p8, gt=g8)
        return {"MAE": m, "S": float(self._s.sms[-1])}

    def results(self) -> Dict[str, float]:
        f = self._f.get_results()["fm"]
        return {"MAE": float(np.mean(self._mae)), "S_measure": float(self._s.get_results()["sm"]), "max_F": float(np.max(f["curve"]))}


# ------------------------------------------------------------------------------------ pixel F1


class MaxF1:
    """Pixel-level max-F1 over thresholds, pooled over all pixels of all images given.

    Scores must lie in [0, 1]; they are binned into ``bins`` equal bins, so the maximum is
    exact over the thresholds ``k / bins`` (k = 0..bins-1), and memory does not grow with the
    number of pixels."""

    def __init__(self, bins: int = 1000) -> None:
        self.bins = int(bins)
        self.pos = np.zeros(self.bins + 1, dtype=np.int64)
        self.neg = np.zeros(self.bins + 1, dtype=np.int64)

    def update(self, score: np.ndarray, gt: np.ndarray) -> None:
        score = np.asarray(score, dtype=np.float64)
        gt = np.asarray(gt, dtype=bool)
        if score.shape != gt.shape:
            raise ValueError(f"score map is {score.shape} but the mask is {gt.shape}")
        if score.size and (score.min() < 0 or score.max() > 1):
            raise ValueError("scores must lie in [0, 1]")
        idx = np.floor(score * self.bins).astype(np.int64)  # score >= k / bins  <=>  idx >= k
        self.pos += np.bincount(idx[gt], minlength=self.bins + 1)
        self.neg += np.bincount(idx[~gt], minlength=self.bins + 1)

    def result(self) -> Tuple[float, float]:
        """(max F1, its threshold)."""
        tp = np.cumsum(self.pos[::-1])[::-1][: self.bins]  # predicted positive at threshold k / bins
        fp = np.cumsum(self.neg[::-1])[::-1][: self.bins]
        n_pos = self.pos.sum()
        denom = 2 * tp + fp + (n_pos - tp)
        f1 = np.where(denom > 0, 2 * tp / np.where(denom == 0, 1, denom), 0.0)
        k = int(np.argmax(f1))
        return float(f1[k]), k / self.bins
