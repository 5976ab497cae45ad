"""``repvit-sam export onnx|coreml|executorch|tflite``: write a model's encoder and decoder for other runtimes.

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


def run_mobile(args: argparse.Namespace) -> int:
    """Export the image encoder and the prompt decoder for on-device runtimes, delegated to
    XNNPACK (see docs/mobile.md)."""
    from ..cli import UsageError
    from .onnx import ExportError, require

    if args.format == "executorch":
        from .executorch import check_options, export_executorch as export

        module = "executorch"
    else:
        from .tflite import check_options, export_tflite as export

        module = "litert_torch"
    try:  # options first (no weights loaded for a bad command line)
        check_options(args.quantize, args.calibration, args.max_points)
    except ExportError as e:
        raise UsageError(str(e)) from None
    if args.calibration is not None and not args.calibration.is_dir():
        raise UsageError(f"--calibration: folder not found: {args.calibration}")
    require(module, "mobile")
    model, name = _load(args)
    paths = export(
        model, args.output, name=name, checkpoint=args.checkpoint, quantize=args.quantize, calibration=args.calibration,
        preprocess=args.preprocess, max_points=args.max_points, log=_log, **_parts(args),
    )
    print(f"wrote {', '.join(p.name for p in paths.values())} to {args.output}")
    return 0


def _add_mobile(fmt: argparse._SubParsersAction, name: str, quantize, help: str) -> None:
    from ..cli import add_model_args, add_output_arg
    from .mobile import DEFAULT_MAX_POINTS

    m = fmt.add_parser(name, help=help, description=run_mobile.__doc__)
    add_output_arg(m, "output folder")
    m.add_argument("--quantize", metavar="|".join(quantize), help=f"{' or '.join(quantize)} (default: fp32)")
    m.add_argument("--calibration", type=Path, metavar="DIR",
                   help="int8: a folder of images like the ones the app will see (default: scikit-image's sample photos)")
    m.add_argument("--preprocess", action="store_true",
                   help="the encoder takes the resized RGB image in 0..255 (top-left of S x S) and its (h, w), and normalises and pads it itself")
    m.add_argument("--max-points", type=int, default=DEFAULT_MAX_POINTS,
                   help=f"point slots of the decoder: clicks + 2 for a box (or 1 padding point) (default {DEFAULT_MAX_POINTS})")
    m.add_argument("--only", choices=("encoder", "decoder"), help="export one part only")
    add_model_args(m)
    m.set_defaults(step=run_mobile)


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

    _add_mobile(fmt, "executorch", ("int8",), "encoder.pte + decoder.pte for ExecuTorch (XNNPACK), fp32 or int8")
    _add_mobile(fmt, "tflite", ("fp16", "int8"), "encoder.tflite + decoder.tflite for LiteRT (XNNPACK), fp32, fp16 or int8")


def run(args: argparse.Namespace) -> int:
    return int(args.step(args))
