"""``repvit-sam eval TASK --data ROOT [--model NAME | --checkpoint PATH] [--limit N] [-o DIR]``.

The tasks are one table, :data:`TASKS`: each names a module of :mod:`.tasks` that defines
``NAME``, ``HELP``, ``GRID`` (default grid of a dense task, 0 for none), ``MAP`` (what its
per-image PNGs show, or None), ``add_arguments(parser)``, ``load(args)`` (the dataset layout,
read before any model loads so layout errors come at once) and ``evaluate(args, model,
predictor, data, maps_dir, show_progress) -> TaskResult``.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from types import ModuleType
from typing import Dict

from ..utils import positive_int

# One row per task: the module under repvit_sam.evaluation.tasks that defines it.
TASKS = ("coco_prompt", "coco_ap", "bsds_edge", "duts_sod", "mvtec_ad", "davis", "uvo")

HELP = "zero-shot benchmarks (image and video): mIoU, mask AP, edges, saliency, anomalies"


def task_modules() -> Dict[str, ModuleType]:
    """{task name: its module}, in the table's order."""
    mods = [importlib.import_module(f".tasks.{m}", __package__) for m in TASKS]
    return {m.NAME: m for m in mods}


def _common(p: argparse.ArgumentParser, task: ModuleType) -> None:
    from ..cli import add_model_args, add_output_arg

    p.add_argument("--data", type=Path, required=True, metavar="ROOT", help="dataset root (see docs/evaluation.md for each layout)")
    add_model_args(p)
    p.add_argument("--limit", type=positive_int, metavar="N", help="evaluate only the first N images (per category for mvtec-ad)")
    add_output_arg(p, f"output folder (default outputs/eval/{task.NAME})", required=False)
    p.add_argument("--cache-dir", type=Path, metavar="DIR", help="embedding cache (default $REPVIT_SAM_HOME/embeddings or ~/.cache/repvit_sam/embeddings)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write cached image embeddings")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    if task.GRID:
        p.add_argument("--points-per-side", type=positive_int, default=task.GRID, metavar="N", help=f"point grid per side (default {task.GRID})")
    if task.MAP:
        p.add_argument("--no-maps", action="store_true", help=f"do not write the {task.MAP} PNGs under OUT/maps")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="eval_task", metavar="TASK", parser_class=type(p))
    for name, task in task_modules().items():
        t = sub.add_parser(name, help=task.HELP, description=task.HELP)
        _common(t, task)
        task.add_arguments(t)


def run(args: argparse.Namespace) -> int:
    from .. import cli as _cli

    tasks = task_modules()
    name = getattr(args, "eval_task", None)
    if name is None:
        raise _cli.UsageError("eval: name a TASK: " + ", ".join(tasks))
    task = tasks[name]
    if hasattr(task, "main"):
        return int(task.main(args))
    data = task.load(args)

    from ..hub import cache_dir, cached_path
    from ..utils import file_sha256
    from .cache import CachedPredictor, EmbeddingCache, weights_hash

    model, model_name = _cli.load_model(args)
    ckpt = args.checkpoint
    if ckpt is None:
        try:
            ckpt = cached_path(model_name)
        except Exception:  # a model with no official file (tests): the weights hash stands for it
            ckpt = None
    whash = weights_hash(model)
    model_info = {
        "name": model_name,
        "checkpoint": str(ckpt) if ckpt is not None else None,
        "checkpoint_sha256": file_sha256(ckpt) if ckpt is not None and Path(ckpt).is_file() else None,
        "weights_sha256": whash,
        "device": str(args.device),
    }
    cache = None if args.no_cache else EmbeddingCache(args.cache_dir or cache_dir() / "embeddings", model_name, whash)
    predictor = CachedPredictor(model, cache)
    out = args.output or Path("outputs") / "eval" / name
    maps = None
    if task.MAP and not args.no_maps:
        maps = out / "maps"
        maps.mkdir(parents=True, exist_ok=True)
    result = task.evaluate(args, model, predictor, data, maps, not args.no_progress)

    from .report import markdown_table, write_results

    cache_info = {"embedding_cache": None if cache is None else {"dir": str(cache.dir), "hits": cache.hits, "misses": cache.misses}}
    json_path, md_path = write_results(out, result, model_info, cache_info)
    print(markdown_table(result.table))
    print(f"wrote {json_path} and {md_path}")
    return 0
