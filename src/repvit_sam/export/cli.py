"""``repvit-sam export onnx|coreml``: write a model's encoder and decoder for other runtimes.

Only argparse and pathlib at import time; torch, onnx and coremltools load inside ``run``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _parts(args: argparse.Namespace):
    return {"encoder": args.only in (None, "encoder"), "decoder": args.only in (None, "decoder")}


def _load(args: argparse.Namespace):
    from ..cli import load_model

    args.device = "cpu"  # graphs are captured on the CPU whatever the machine has
    return load_model(args)


def run_onnx(args: argparse.Namespace) -> int:
    """Export the image encoder and the prompt decoder to ONNX (see docs/export.md)."""
    from ..cli import UsageError

    if args.opset < 17:
        raise UsageError(f"--opset must be 17 or more, got {args.opset}")
    from .onnx import export_onnx, require

    require("onnx")  # fail on a missing extra before loading weights
    model, name = _load(args)
    paths = export_onnx(
        model, args.output, name=name, checkpoint=args.checkpoint, opset=args.opset,
        preprocess=args.preprocess, static_size=args.tensorrt_safe, log=_log, **_parts(args),
    )
    print(f"wrote {', '.join(p.name for p in paths.values())} to {args.output}")
    return 0


def run_coreml(args: argparse.Namespace) -> int:
    """Export the image encoder and the prompt decoder to Core ML packages (see docs/export.md)."""
    from ..cli import UsageError

    if args.max_points < 2:
        raise UsageError(f"--max-points must be 2 or more, got {args.max_points}")
    from .coreml import export_coreml
    from .onnx import require

    require("coremltools")
    model, name = _load(args)
    paths = export_coreml(
        model, args.output, name=name, checkpoint=args.checkpoint, precision=args.precision,
        max_points=args.max_points, log=_log, **_parts(args),
    )
    print(f"wrote {', '.join(p.name for p in paths.values())} to {args.output}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """One sub-command per format; each sets ``step``, the function ``run`` calls."""
    from ..cli import add_model_args, add_output_arg

    fmt = p.add_subparsers(dest="format", metavar="FORMAT", parser_class=type(p))
    fmt.required = True

    o = fmt.add_parser("onnx", help="encoder.onnx + decoder.onnx (segment_anything's decoder interface)", description=run_onnx.__doc__)
    add_output_arg(o, "output folder")
    o.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17, default 17)")
    o.add_argument("--preprocess", action="store_true",
                   help="the encoder takes the resized RGB image (1, 3, h, w) in 0..255 and normalises and pads it itself")
    o.add_argument("--tensorrt-safe", action="store_true",
                   help="static output size: masks come as (1, 4, S, S) over the padded input square (crop and resize them yourself)")
    o.add_argument("--only", choices=("encoder", "decoder"), help="export one part only")
    add_model_args(o)
    o.set_defaults(step=run_onnx)

    c = fmt.add_parser("coreml", help="encoder.mlpackage + decoder.mlpackage (run on macOS)", description=run_coreml.__doc__)
    add_output_arg(c, "output folder")
    c.add_argument("--precision", choices=("fp16", "fp32"), default="fp16", help="compute precision (default fp16)")
    c.add_argument("--max-points", type=int, default=16, help="largest number of points the decoder accepts (default 16)")
    c.add_argument("--only", choices=("encoder", "decoder"), help="export one part only")
    add_model_args(c)
    c.set_defaults(step=run_coreml)


def run(args: argparse.Namespace) -> int:
    return int(args.step(args))

