"""The video tasks of ``repvit-sam eval``: ``davis`` and ``uvo`` (their options and their run).

    repvit-sam eval davis --data DAVIS [--results DIR] [--split val] [--sequences a,b] --out OUT
    repvit-sam eval uvo --data ROOT [--annotations FILE] [--images DIR] --out OUT

Both take the tracking options of :class:`repvit_sam.video.VideoOptions` and ``--backend``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable


def add_video_tasks(tasks: argparse._SubParsersAction, make_task: Callable[..., argparse.ArgumentParser]) -> None:
    from ...video.options import add_arguments as add_video_options

    t = make_task(tasks, "davis")
    t.add_argument("--results", type=Path, metavar="DIR",
                   help="score this folder of per-sequence palette PNGs (DIR/SEQ/NNNNN.png) instead of tracking; no model is loaded")
    t.add_argument("--split", default="val", help="ImageSets/2017/<split>.txt (default val)")
    t.add_argument("--sequences", help="comma-separated sequence names (default: all of the split)")
    t.add_argument("--backend", default=None, help="image-encoder backend (see `repvit-sam bench`)")
    add_video_options(t)

    t = make_task(tasks, "uvo", grid=32)
    t.add_argument("--annotations", type=Path, metavar="FILE",
                   help="YouTube-VIS-style JSON (default ROOT/vis_instances.json or ROOT/[annotations/]UVO_video_val_dense.json)")
    t.add_argument("--images", type=Path, metavar="DIR", help="frames folder the file_names are relative to "
                   "(default ROOT/JPEGImages/480p, ROOT/uvo_videos_dense_frames or ROOT)")
    t.add_argument("--max-masks", type=int, default=100, metavar="N", help="frame-0 proposals kept, highest predicted IoU first (default 100)")
    t.add_argument("--backend", default=None, help="image-encoder backend (see `repvit-sam bench`)")
    add_video_options(t)


def _model_info(args: argparse.Namespace, model, name: str):
    from ...hub import file_sha256
    from ..cache import weights_hash

    ckpt = args.checkpoint
    return {
        "name": name,
        "checkpoint": str(ckpt) if ckpt is not None else None,
        "checkpoint_sha256": file_sha256(ckpt) if ckpt is not None and Path(ckpt).is_file() else None,
        "weights_sha256": weights_hash(model),
        "device": str(args.device),
        "backend": args.backend,
    }


def run_video_task(args: argparse.Namespace) -> int:
    from ... import cli as _cli
    from ...video.options import from_args
    from ..report import markdown_table, write_results
    from . import davis, uvo
    from .. import video_datasets as V

    task = args.eval_task
    options = from_args(args)
    out = args.out or Path("outputs") / "eval" / task
    show = not args.no_progress
    if task == "davis":
        names = [s.strip() for s in args.sequences.split(",") if s.strip()] if args.sequences else None
        sequences = V.davis_sequences(args.data, args.split, limit=args.limit, names=names)
        if args.results is not None:
            if not args.results.is_dir():
                raise _cli.UsageError(f"--results: not a folder: {args.results}")
            result = davis.run(None, sequences, out, args.results, show)
            model_info = {"name": None, "results": str(args.results)}
        else:
            model, name = _cli.load_model(args)
            vp = _video_predictor(model, options, args.backend)
            result = davis.run(vp, sequences, out, None, show)
            model_info = _model_info(args, model, name)
    else:
        if args.max_masks < 1:
            raise _cli.UsageError(f"--max-masks must be >= 1, got {args.max_masks}")
        ann, images = V.default_vis_paths(args.data, args.annotations, args.images)
        videos = V.load_vis(ann, images, args.limit)
        model, name = _cli.load_model(args)
        vp = _video_predictor(model, options, args.backend)
        result = uvo.run(vp, model, videos, out, args.points_per_side, args.max_masks, show)
        model_info = _model_info(args, model, name)
    json_path, md_path = write_results(out, result, model_info)
    print(markdown_table(result.table))
    print(f"wrote {json_path} and {md_path}")
    return 0


def _video_predictor(model, options, backend):
    from ...video.predictor import VideoPredictor

    return VideoPredictor(model, options, backend=backend)
