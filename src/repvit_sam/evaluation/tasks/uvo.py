"""uvo: open-world video instance segmentation (UVO v1.0 dense) as SAM-PT adapts it, AR100.

Per video: the automatic mask generator segments frame 0 (``points_per_side`` 32, predicted
IoU > 0.88, stability >= 0.95, box NMS 0.7; the ``max_masks`` (100) of highest predicted IoU
kept); each mask is a mask prompt on frame 0, tracked forward by
:class:`repvit_sam.video.VideoPredictor`. A track's score is the mean over its frames of the
per-frame predicted IoU (0 on frames where its mask is empty), as SAM-PT scores its tracks.

Scoring: average recall by spatio-temporal IoU (:mod:`repvit_sam.evaluation.video_metrics`):
at most 100 tracks per video by score, class-agnostic greedy matching, recall pooled over
videos and averaged over IoU 0.50:0.05:0.95; AR_small / medium / large by the ground-truth
track's mean area. Intersections and unions are summed frame by frame as the tracks are
made, so no video is held in memory. The predictions are written as YouTube-VIS results
(``OUT/predictions.json``: video_id, score, category_id 1, per-frame RLE or null) for the
official tools.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from ..video_datasets import VisVideo, segmentation_to_mask
from ..video_metrics import VideoMatchInput, average_recall
from .common import TaskResult, progress

NAME = "uvo"
HELP = "open-world video instance segmentation on UVO (YouTube-VIS-style JSON): AR100 by spatio-temporal IoU"
GRID = 32  # AMG points per side on frame 0 (SAM-PT's setting)
MAP = None

MAX_DETS = 100


def frame0_masks(model, frame: np.ndarray, points_per_side: int, max_masks: int) -> List[Dict[str, Any]]:
    """The automatic mask generator's records on ``frame``, highest predicted IoU first."""
    from ... import SamAutomaticMaskGenerator

    gen = SamAutomaticMaskGenerator(model, points_per_side=points_per_side, pred_iou_thresh=0.88,
                                    stability_score_thresh=0.95, box_nms_thresh=0.7, output_mode="binary_mask")
    records = sorted(gen.generate(frame), key=lambda r: -r["predicted_iou"])
    return records[:max_masks]


def track_video(vp, model, video: VisVideo, points_per_side: int, max_masks: int) -> Dict[str, Any]:
    """Track one video's frame-0 proposals and compare them with its ground truth as they come:
    returns the IoU inputs, the predictions (RLE) and their scores."""
    from ...inference.masks import mask_to_rle
    from ...video.frames import ArrayFrames, FolderFrames
    from ...video.prompts import Prompts

    folder = video.frames[0].parent
    if all(f.parent == folder for f in video.frames) and len(list(folder.iterdir())) == len(video.frames):
        src = FolderFrames(folder)
    else:  # file_names pick some files of a folder: read just those
        from ...io import load_image

        src = ArrayFrames(_LazyFrames(video.frames, load_image), name=video.name)
    records = frame0_masks(model, src[0], points_per_side, max_masks)
    n_gt = len(video.tracks)
    gt_area_sum = np.zeros(n_gt)
    gt_frames = np.zeros(n_gt)
    d = len(records)
    inter = np.zeros((d, n_gt))
    area_d = np.zeros(d)
    area_g = np.zeros(n_gt)
    score_sum = np.zeros(d)
    segs: List[List[Any]] = [[] for _ in range(d)]
    if d:
        prompts = Prompts()
        for i, r in enumerate(records):
            prompts.add(0, i + 1, mask=r["segmentation"])
        frames = vp.propagate(src, prompts, "forward")
    else:
        frames = ((t, None) for t in range(len(video.frames)))
    for r in frames:
        t = r.index if d else r[0]
        gts = [segmentation_to_mask(tr["segmentations"][t], video.height, video.width) for tr in video.tracks]
        g = np.stack([np.zeros((video.height, video.width), bool) if m is None else m for m in gts]) if n_gt else None
        g_area = g.reshape(n_gt, -1).sum(1) if n_gt else np.zeros(0)
        area_g += g_area
        gt_area_sum += g_area
        gt_frames += g_area > 0
        if not d:
            continue
        p = np.stack([r.masks[i + 1] for i in range(d)])
        p_area = p.reshape(d, -1).sum(1)
        area_d += p_area
        if n_gt:
            inter += p.reshape(d, -1).astype(np.float32) @ g.reshape(n_gt, -1).astype(np.float32).T
        for i in range(d):
            score_sum[i] += r.scores[i + 1]
            segs[i].append(mask_to_rle(p[i]) if p_area[i] else None)
    union = area_d[:, None] + area_g[None, :] - inter
    ious = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    scores = score_sum / max(len(video.frames), 1)
    order = np.argsort(-scores, kind="mergesort")[:MAX_DETS]
    gt_mean_area = np.where(gt_frames > 0, gt_area_sum / np.maximum(gt_frames, 1), 0.0)
    crowd = np.array([bool(tr.get("iscrowd", 0)) for tr in video.tracks], dtype=bool)
    return {
        "match": VideoMatchInput(ious[order], gt_mean_area, crowd),
        "predictions": [{"video_id": video.id, "score": float(scores[i]), "category_id": 1, "segmentations": segs[i]} for i in order],
        "proposals": d,
    }


class _LazyFrames:
    """A list-like of frames loaded on access (for ArrayFrames)."""

    def __init__(self, paths, load) -> None:
        self.paths, self.load = paths, load

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.load(self.paths[i])


def run(vp, model, videos: List[VisVideo], out: Path, points_per_side: int = 32, max_masks: int = 100,
        show_progress: bool = True) -> TaskResult:
    from ...utils import write_json_atomic

    matches, predictions, per_video = [], [], []
    for v in progress(videos, "uvo", enabled=show_progress):
        res = track_video(vp, model, v, points_per_side, max_masks)
        matches.append(res["match"])
        predictions += res["predictions"]
        one = average_recall([res["match"]])
        per_video.append({"video": v.name, "video_id": v.id, "frames": len(v.frames), "tracks": len(v.tracks),
                          "proposals": res["proposals"], "AR100": one["AR"]})
    ar = average_recall(matches)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "predictions.json", predictions)
    overall = {"videos": len(videos), "AR100": ar["AR"], "AR100_small": ar["AR_small"], "AR100_medium": ar["AR_medium"],
               "AR100_large": ar["AR_large"]}
    protocol = {
        "proposals": f"SamAutomaticMaskGenerator on frame 0: points_per_side={points_per_side}, pred_iou_thresh=0.88, "
                     f"stability_score_thresh=0.95, box_nms_thresh=0.7, the {max_masks} of highest predicted IoU",
        "tracking": "each proposal a mask prompt on frame 0, repvit_sam.video.VideoPredictor forward",
        "options": dataclasses.asdict(vp.options),
        "track_score": "mean over the video's frames of the per-frame predicted IoU (0 where empty)",
        "metric": f"AR@{MAX_DETS}: spatio-temporal IoU (per-frame intersections summed / unions summed), class-agnostic greedy "
                  "matching by score, recall pooled over videos, averaged over IoU 0.50:0.05:0.95; small < 32^2 <= medium "
                  "< 96^2 <= large by the track's mean area over frames where present; crowd tracks ignored",
        "predictions": str(out / "predictions.json"),
    }
    table = [("UVO (AR@100, %)", {k: 100 * v for k, v in overall.items() if k != "videos"})]
    return TaskResult("uvo", protocol, overall, per_video, table, unit="videos")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ...utils import positive_int
    from ...video.options import add_arguments as add_video_options

    p.add_argument("--annotations", type=Path, metavar="FILE",
                   help="YouTube-VIS-style JSON (default ROOT/vis_instances.json or ROOT/[annotations/]UVO_video_val_dense.json)")
    p.add_argument("--images", type=Path, metavar="DIR", help="frames folder the file_names are relative to "
                   "(default ROOT/JPEGImages/480p, ROOT/uvo_videos_dense_frames or ROOT)")
    p.add_argument("--max-masks", type=positive_int, default=100, metavar="N",
                   help="frame-0 proposals kept, highest predicted IoU first (default 100)")
    p.add_argument("--backend", default=None, help="image-encoder backend (see `repvit-sam bench`)")
    add_video_options(p)


def main(args: argparse.Namespace) -> int:
    from ... import cli as _cli
    from .. import video_datasets as V
    from .video_common import finish, model_info, video_predictor

    out = args.output or Path("outputs") / "eval" / NAME
    ann, images = V.default_vis_paths(args.data, args.annotations, args.images)
    videos = V.load_vis(ann, images, args.limit)
    model, name = _cli.load_model(args)
    result = run(video_predictor(model, args), model, videos, out, args.points_per_side, args.max_masks, not args.no_progress)
    return finish(args, result, model_info(args, model, name), out)

