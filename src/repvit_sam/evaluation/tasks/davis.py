"""davis: semi-supervised video object segmentation on DAVIS 2017 (val), J and F.

Tracking: each sequence's objects (labels 1..N of the first frame's annotation) are given as
mask prompts on frame 0 and propagated forward by :class:`repvit_sam.video.VideoPredictor`
(strategy and options recorded in the protocol); every frame's label image (overlaps go to the
object with the higher predicted IoU) is written as a DAVIS palette PNG to
``OUT/results/SEQ/NNNNN.png``, the layout the official tool scores. ``--results DIR`` scores an
existing folder of that layout instead, without a model.

Scoring: :mod:`repvit_sam.evaluation.video_metrics` (the davis2017-evaluation definitions:
first and last frames excluded, objects missing from the results empty, statistics per object
then averaged).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from ..video_datasets import DavisSequence, read_label_png, read_results
from ..video_metrics import DAVIS_KEYS, DavisObject, davis_summary, objects_in, score_sequence
from .common import TaskResult, progress

NAME = "davis"
HELP = "semi-supervised video object segmentation on DAVIS 2017: J&F (tracks, or scores --results)"
GRID = 0
MAP = None


def track_sequence(vp, seq: DavisSequence, out_dir: Path) -> float:
    """Track ``seq`` from its first annotation and write its label PNGs to ``out_dir``;
    returns the seconds spent (frames/s = frames / seconds)."""
    import time

    from ...video.frames import FolderFrames
    from ...video.output import save_label_png
    from ...video.predictor import Prompts

    src = FolderFrames(seq.frames[0].parent)
    first = read_label_png(seq.annotations[0], src.size)
    prompts = Prompts()
    for k in range(1, objects_in(first) + 1):
        if (first == k).any():
            prompts.add(0, k, mask=first == k)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if not len(prompts):  # nothing to track: every frame is background
        for f in seq.frames:
            save_label_png(np.zeros(src.size, np.uint8), out_dir / f"{f.stem}.png")
        return time.perf_counter() - t0
    names = [f.stem for f in src.files]
    for r in vp.propagate(src, prompts, "forward"):
        save_label_png(r.label_map(src.size), out_dir / f"{names[r.index]}.png")
    return time.perf_counter() - t0


def score(sequences: List[DavisSequence], results: Path, show_progress: bool = True) -> TaskResult:
    """Score the results folder against ``sequences`` (the protocol is filled in by ``run``)."""
    objects: List[DavisObject] = []
    per_seq: List[Dict[str, Any]] = []
    for seq in progress(sequences, "davis (scoring)", enabled=show_progress):
        gt = [read_label_png(a) for a in seq.annotations]
        size = gt[0].shape
        pred = read_results(results, seq, size)
        objs = score_sequence(seq.name, gt, pred)
        objects += objs
        stats = [o.stats() for o in objs]
        row: Dict[str, Any] = {"sequence": seq.name, "objects": len(objs), "frames": len(gt)}
        if stats:
            jm = float(np.mean([s["J-Mean"] for s in stats]))
            fm = float(np.mean([s["F-Mean"] for s in stats]))
            row.update({"J&F-Mean": (jm + fm) / 2, "J-Mean": jm, "F-Mean": fm})
        row["per_object"] = {f"{seq.name}_{o.obj_id}": {k: v for k, v in s.items() if k in ("J-Mean", "F-Mean")}
                             for o, s in zip(objs, stats)}
        per_seq.append(row)
    overall = davis_summary(objects)
    table = [("DAVIS 2017 (semi-supervised)", {k: 100 * overall[k] for k in DAVIS_KEYS})]
    return TaskResult("davis", {}, {"sequences": len(sequences), "objects": len(objects), **overall}, per_seq, table,
                      unit="sequences")


def run(vp, sequences: List[DavisSequence], out: Path, results: Optional[Path], show_progress: bool = True) -> TaskResult:
    """Track (unless ``results`` is given) and score."""
    timing: Dict[str, Any] = {}
    if results is None:
        results = out / "results"
        seconds = frames = 0.0
        for seq in progress(sequences, "davis (tracking)", enabled=show_progress):
            seconds += track_sequence(vp, seq, results / seq.name)
            frames += len(seq.frames)
        timing = {"frames": int(frames), "seconds": round(seconds, 3), "frames_per_s": round(frames / seconds, 3) if seconds else None}
    result = score(sequences, results, show_progress)
    result.protocol = {
        "task": "DAVIS 2017 semi-supervised: objects 1..N of the first frame's annotation given as masks on frame 0",
        "results": str(results),
        "tracker": "none (scored an existing results folder)" if vp is None else "repvit_sam.video.VideoPredictor, forward from frame 0",
        "options": None if vp is None else dataclasses.asdict(vp.options),
        "metrics": "davis2017-evaluation definitions: J = IoU (empty union = 1); F = boundary F (seg2bmap, disk tolerance "
                   "ceil(0.008 x diagonal)); first and last frames excluded; objects missing from the results empty; "
                   "mean / recall (> 0.5) / decay (first minus last quarter) per object, then averaged",
        **({"timing": timing} if timing else {}),
    }
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ...video.options import add_arguments as add_video_options

    p.add_argument("--results", type=Path, metavar="DIR",
                   help="score this folder of per-sequence palette PNGs (DIR/SEQ/NNNNN.png) instead of tracking; no model is loaded")
    p.add_argument("--split", default="val", help="ImageSets/2017/<split>.txt (default val)")
    p.add_argument("--sequences", help="comma-separated sequence names (default: all of the split)")
    p.add_argument("--backend", default=None, help="image-encoder backend (see `repvit-sam bench`)")
    add_video_options(p)


def main(args: argparse.Namespace) -> int:
    from ... import cli as _cli
    from .. import video_datasets as V
    from .video_common import finish, model_info, video_predictor

    out = args.output or Path("outputs") / "eval" / NAME
    names = [s.strip() for s in args.sequences.split(",") if s.strip()] if args.sequences else None
    sequences = V.davis_sequences(args.data, args.split, limit=args.limit, names=names)
    if args.results is not None:
        if not args.results.is_dir():
            raise _cli.UsageError(f"--results: not a folder: {args.results}")
        result = run(None, sequences, out, args.results, not args.no_progress)
        return finish(args, result, {"name": None, "results": str(args.results)}, out)
    model, name = _cli.load_model(args)
    result = run(video_predictor(model, args), sequences, out, None, not args.no_progress)
    return finish(args, result, model_info(args, model, name), out)

