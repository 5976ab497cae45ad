"""What the video tasks of ``repvit-sam eval`` (davis, uvo) share: the model record of the
results and the video predictor on the chosen backend."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict


def model_info(args: argparse.Namespace, model, name: str) -> Dict[str, Any]:
    from ...utils import file_sha256
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


def video_predictor(model, args: argparse.Namespace):
    from ...video.options import from_args
    from ...video.predictor import VideoPredictor

    return VideoPredictor(model, from_args(args), backend=args.backend)


def finish(args: argparse.Namespace, result, info: Dict[str, Any], out: Path) -> int:
    from ..report import markdown_table, write_results

    json_path, md_path = write_results(out, result, info)
    print(markdown_table(result.table))
    print(f"wrote {json_path} and {md_path}")
    return 0
