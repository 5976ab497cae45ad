"""``repvit-sam eval TASK --data ROOT [--model NAME | --checkpoint PATH] [--limit N] [--out DIR]``.

Imports only argparse / pathlib at module level: the model, datasets and metrics load in ``run``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = {
    "coco-prompt": "mIoU from ground-truth box and one-point prompts (COCO / LVIS instances)",
    "coco-ap": "mask AP with a detector's boxes as prompts (COCO, LVIS, SegInW)",
    "bsds-edge": "zero-shot edge detection on BSDS500: ODS, OIS, AP, R50",
    "duts-sod": "salient-object segmentation on DUTS-TE: MAE, S-measure, max F",
    "mvtec-ad": "zero-shot anomaly segmentation on MVTec-AD: pixel max-F1",
    "davis": "semi-supervised video object segmentation on DAVIS 2017: J&F (tracks, or scores --results)",
    "uvo": "open-world video instance segmentation on UVO (YouTube-VIS-style JSON): AR100 by spatio-temporal IoU",
}


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _non_negative_int(text: str) -> int:
    return 0 if text.strip() == "0" else _positive_int(text)


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return v


def _common(p: argparse.ArgumentParser) -> None:
    from ..cli import add_model_args

    p.add_argument("--data", type=Path, required=True, metavar="ROOT", help="dataset root (see docs/evaluation.md for each layout)")
    add_model_args(p)
    p.add_argument("--limit", type=_positive_int, metavar="N", help="evaluate only the first N images (per category for mvtec-ad)")
    p.add_argument("--out", type=Path, metavar="DIR", help="output folder (default outputs/eval/TASK)")
    p.add_argument("--cache-dir", type=Path, metavar="DIR", help="embedding cache (default $REPVIT_SAM_HOME/embeddings or ~/.cache/repvit_sam/embeddings)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write cached image embeddings")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _coco_paths(p: argparse.ArgumentParser) -> None:
    p.add_argument("--annotations", type=Path, metavar="FILE", help="instances JSON (default ROOT/annotations/instances_val2017.json or lvis_v1_val.json)")
    p.add_argument("--images", type=Path, metavar="DIR", help="images folder (default ROOT/val2017, else ROOT)")


def _maps(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--no-maps", action="store_true", help=f"do not write the {what} PNGs under OUT/maps")


def _grid(p: argparse.ArgumentParser, default: int) -> None:
    p.add_argument("--points-per-side", type=_positive_int, default=default, metavar="N", help=f"point grid per side (default {default})")


def _task(tasks: argparse._SubParsersAction, name: str, grid: int = 0, maps: str = "") -> argparse.ArgumentParser:
    """A task's parser with the common options (and the point grid / map options of dense tasks)."""
    t = tasks.add_parser(name, help=HELP[name], description=HELP[name])
    _common(t)
    if grid:
        _grid(t, grid)
    if maps:
        _maps(t, maps)
    return t


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="zero-shot benchmarks: " + ", ".join(HELP), description=__doc__.splitlines()[0])
    tasks = p.add_subparsers(dest="eval_task", metavar="TASK", parser_class=type(p))

    t = _task(tasks, "coco-prompt")
    _coco_paths(t)
    t.add_argument("--prompts", default="box,point", help="comma-separated: box, point (default box,point)")
    t.add_argument("--select-box", choices=("single", "best-score", "oracle"), default="single",
                   help="mask chosen for a box: single output (default), best predicted IoU of 3, or best true IoU of 3")
    t.add_argument("--select-point", choices=("single", "best-score", "oracle"), default="best-score",
                   help="mask chosen for one point (default best-score of 3 candidates)")
    t.add_argument("--refine", type=_non_negative_int, default=0, metavar="K", help="corrective clicks after the first point (default 0)")
    t.add_argument("--max-instances", type=_positive_int, metavar="N", help="at most N instances per image")

    t = _task(tasks, "coco-ap")
    _coco_paths(t)
    t.add_argument("--detections", type=Path, required=True, metavar="PATH",
                   help="COCO results JSON of detector boxes; with --seginw a folder of <dataset>.json")
    t.add_argument("--seginw", action="store_true", help="ROOT holds SegInW dataset folders: AP per dataset and their mean")
    t.add_argument("--max-dets", type=_positive_int, default=100, help="detections per image, highest score first (default 100)")
    t.add_argument("--score-rule", choices=("detector", "detector*iou"), default="detector", help="mask score (default: the detector's)")
    t.add_argument("--select", choices=("single", "best-score"), default="single", help="mask per box (default single output)")

    t = _task(tasks, "bsds-edge", grid=16, maps="edge map")
    t.add_argument("--split", choices=("test", "val", "train"), default="test", help="BSDS500 split (default test)")
    t.add_argument("--nms", type=_fraction, default=0.7, help="mask box-NMS IoU threshold (default 0.7)")
    t.add_argument("--thresholds", type=_positive_int, default=99, help="edge thresholds (default 99)")

    t = _task(tasks, "duts-sod", grid=16, maps="saliency map")
    t.add_argument("--max-border", type=_fraction, default=0.2, help="masks covering more of the image border are background (default 0.2)")
    t.add_argument("--min-area", type=_fraction, default=0.005, help="masks smaller than this fraction of the image are ignored (default 0.005)")

    t = _task(tasks, "mvtec-ad", grid=16, maps="anomaly map")
    t.add_argument("--categories", help="comma-separated categories (default: all under ROOT)")
    t.add_argument("--max-area", type=_fraction, default=0.1, help="largest defect candidate, as a fraction of the image (default 0.1)")

    from .tasks.video_cli import add_video_tasks

    add_video_tasks(tasks, _task)
    p.set_defaults(func=run)


def _datasets(args: argparse.Namespace):
    """Read the dataset layout (before any model loads, so layout errors come at once)."""
    from . import datasets as D

    task = args.eval_task
    if task == "coco-prompt":
        ann, images = D.default_coco_paths(args.data, args.annotations, args.images)
        return D.load_coco(ann, images, args.limit)
    if task == "coco-ap":
        if args.seginw:
            if not args.detections.is_dir():
                raise D.DatasetError(f"--seginw needs --detections to be a folder of <dataset>.json files: {args.detections}")
            out = []
            for name, ann, images in D.seginw_datasets(args.data):
                det = args.detections / f"{name}.json"
                if not det.is_file():
                    raise D.DatasetError(f"detections for SegInW dataset {name!r} not found: {det}")
                out.append((D.load_coco(ann, images, args.limit, name=name), det))
            return out
        ann, images = D.default_coco_paths(args.data, args.annotations, args.images)
        return [(D.load_coco(ann, images, args.limit), args.detections)]
    if task == "bsds-edge":
        return D.bsds_samples(args.data, args.split, args.limit)
    if task == "duts-sod":
        return D.duts_samples(args.data, args.limit)
    cats = [c.strip() for c in args.categories.split(",") if c.strip()] if args.categories else None
    return D.mvtec_samples(args.data, cats, args.limit)


def run(args: argparse.Namespace) -> int:
    from .. import cli as _cli

    task = getattr(args, "eval_task", None)
    if task is None:
        raise _cli.UsageError("eval: name a TASK: " + ", ".join(HELP))
    if task in ("davis", "uvo"):
        from .tasks.video_cli import run_video_task

        return run_video_task(args)
    prompts = None
    if task == "coco-prompt":
        prompts = [s.strip() for s in args.prompts.split(",") if s.strip()]
        bad = [s for s in prompts if s not in ("box", "point")]
        if bad or not prompts:
            raise _cli.UsageError(f"--prompts takes box and/or point, got {args.prompts!r}")
        if args.refine and "point" not in prompts:
            raise _cli.UsageError("--refine needs point prompts (--prompts point or box,point)")
    if task == "coco-ap" and not args.detections.exists():
        raise _cli.UsageError(f"--detections: not found: {args.detections}")

    data = _datasets(args)

    from ..hub import cache_dir, cached_path, file_sha256
    from .cache import CachedPredictor, EmbeddingCache, weights_hash

    model, name = _cli.load_model(args)
    ckpt = args.checkpoint
    if ckpt is None:
        try:
            ckpt = cached_path(name)
        except Exception:  # a model with no official file (tests): the weights hash stands for it
            ckpt = None
    whash = weights_hash(model)
    model_info = {
        "name": name,
        "checkpoint": str(ckpt) if ckpt is not None else None,
        "checkpoint_sha256": file_sha256(ckpt) if ckpt is not None and Path(ckpt).is_file() else None,
        "weights_sha256": whash,
        "device": str(args.device),
    }
    cache = None if args.no_cache else EmbeddingCache(args.cache_dir or cache_dir() / "embeddings", name, whash)
    predictor = CachedPredictor(model, cache)
    out = args.out or Path("outputs") / "eval" / task
    show = not args.no_progress
    maps = None
    if task in ("bsds-edge", "duts-sod", "mvtec-ad") and not args.no_maps:
        maps = out / "maps"
        maps.mkdir(parents=True, exist_ok=True)

    if task == "coco-prompt":
        from .tasks import coco_prompt

        result = coco_prompt.run(predictor, data, prompts, args.select_box, args.select_point, args.refine, args.max_instances, show)
    elif task == "coco-ap":
        from .tasks import coco_ap

        result = coco_ap.run(predictor, [d for d, _ in data], [p for _, p in data], args.max_dets, args.score_rule, args.select,
                             args.seginw, show)
    elif task == "bsds-edge":
        from .tasks import bsds_edge

        result = bsds_edge.run(predictor, data, args.points_per_side, args.nms, args.thresholds, maps, show)
    elif task == "duts-sod":
        from .tasks import duts_sod

        result = duts_sod.run(model, predictor, data, args.points_per_side, args.max_border, args.min_area, maps, show)
    else:
        from .tasks import mvtec_ad

        result = mvtec_ad.run(model, predictor, data, args.points_per_side, args.max_area, maps, show)

    from .report import markdown_table, write_results

    cache_info = {"embedding_cache": None if cache is None else {"dir": str(cache.dir), "hits": cache.hits, "misses": cache.misses}}
    json_path, md_path = write_results(out, result, model_info, cache_info)
    print(markdown_table(result.table))
    print(f"wrote {json_path} and {md_path}")
    return 0
