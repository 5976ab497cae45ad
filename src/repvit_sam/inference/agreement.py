"""How well two sets of automatic-mask records agree (fast vs reference path, bf16 vs fp32,
coarse-to-fine vs full grid).

Masks are matched one-to-one, greedily by mask IoU (highest first); a pair counts only if its
IoU is at least ``min_iou``. Records may carry their ``segmentation`` in any output mode.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np


def _coco_rles(records: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Each record's mask as a pycocotools RLE (bytes counts)."""
    from .masks import coco_encode_rle, mask_to_rle

    out = []
    for r in records:
        seg = r["segmentation"]
        if isinstance(seg, np.ndarray):
            seg = mask_to_rle(seg)
        elif isinstance(seg.get("counts"), list):  # uncompressed RLE
            seg = coco_encode_rle(seg)
        counts = seg["counts"]
        out.append({"size": seg["size"], "counts": counts.encode("utf-8") if isinstance(counts, str) else counts})
    return out


def mask_iou_matrix(a: Sequence[Dict[str, Any]], b: Sequence[Dict[str, Any]]) -> np.ndarray:
    """(len(a), len(b)) IoU of every pair of record masks; two empty masks have IoU 1."""
    from pycocotools import mask as mask_utils

    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    ra, rb = _coco_rles(a), _coco_rles(b)
    ious = np.asarray(mask_utils.iou(ra, rb, [0] * len(b)), dtype=np.float64).reshape(len(a), len(b))
    empty_a = np.asarray(mask_utils.area(ra)) == 0
    empty_b = np.asarray(mask_utils.area(rb)) == 0
    ious[np.outer(empty_a, empty_b)] = 1.0
    return ious


def compare_records(reference: Sequence[Dict[str, Any]], other: Sequence[Dict[str, Any]], min_iou: float = 0.5) -> Dict[str, Any]:
    """Summary of the agreement of ``other`` with ``reference``.

    Keys: n_reference, n_other, matched (pairs with IoU >= ``min_iou``), recall (matched /
    n_reference), precision (matched / n_other), mean_iou and min_iou over matched pairs,
    matched_iou_ge_0_99 (pairs with IoU >= 0.99), max_predicted_iou_diff and
    max_stability_diff over matched pairs.
    """
    ious = mask_iou_matrix(reference, other)
    pairs = []
    if ious.size:
        # highest IoU first; among equal IoUs (e.g. identical masks) the closest scores first
        score_gap = np.abs(
            np.asarray([r["predicted_iou"] for r in reference], dtype=np.float64)[:, None]
            - np.asarray([r["predicted_iou"] for r in other], dtype=np.float64)[None, :]
        )
        order = np.lexsort((score_gap.ravel(), -np.round(ious.ravel(), 6)))
        used_r, used_o = set(), set()
        for flat in order:
            i, j = divmod(int(flat), ious.shape[1])
            if ious[i, j] < min_iou:
                break
            if i in used_r or j in used_o:
                continue
            used_r.add(i)
            used_o.add(j)
            pairs.append((i, j, float(ious[i, j])))
    matched = len(pairs)
    piou = [abs(reference[i]["predicted_iou"] - other[j]["predicted_iou"]) for i, j, _ in pairs]
    stab = [abs(reference[i]["stability_score"] - other[j]["stability_score"]) for i, j, _ in pairs]
    values = [v for _, _, v in pairs]
    return {
        "n_reference": len(reference),
        "n_other": len(other),
        "matched": matched,
        "recall": matched / len(reference) if reference else 1.0,
        "precision": matched / len(other) if other else 1.0,
        "mean_iou": float(np.mean(values)) if values else float("nan"),
        "min_iou": float(min(values)) if values else float("nan"),
        "matched_iou_ge_0_99": sum(v >= 0.99 for v in values),
        "max_predicted_iou_diff": float(max(piou)) if piou else 0.0,
        "max_stability_diff": float(max(stab)) if stab else 0.0,
    }
