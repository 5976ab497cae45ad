"""``repvit-sam`` command line: a table of subcommands, each a typed function.

Exit status: 0 success, 2 usage error (bad arguments or prompts), 1 runtime error. Errors are
one line on stderr; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad command-line arguments: exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, status 2 (argparse prints usage too)
        raise UsageError(f"{self.prog}: {message}")


# ---------------------------------------------------------------- argument types
def _floats(text: str, n: Tuple[int, ...], what: str) -> List[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if len(values) not in n:
        raise argparse.ArgumentTypeError(f"{what} needs {' or '.join(map(str, n))} numbers, got {text!r}")
    return values


def point_arg(text: str) -> List[float]:
    """X,Y or X,Y,LABEL (label 1 = foreground, default; 0 = background)."""
    values = _floats(text, (2, 3), "--point")
    if len(values) == 2:
        values.append(1.0)
    if values[2] not in (0.0, 1.0):
        raise argparse.ArgumentTypeError(f"--point label must be 1 (foreground) or 0 (background), got {text!r}")
    return values


def box_arg(text: str) -> List[float]:
    return _floats(text, (4,), "--box")


# ---------------------------------------------------------------- model loading
def add_model_args(p: argparse.ArgumentParser) -> None:
    from .registry import list_models

    p.add_argument("--model", help=f"model name: {', '.join(list_models())} (default repvit; with --checkpoint, detected)")
    p.add_argument("--checkpoint", type=Path, help="checkpoint file; always wins over the cache / download")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")


def load_model(args: argparse.Namespace):
    """(model fused for inference, its official name) from --model / --checkpoint."""
    from .hub import load_pretrained
    from .modeling.fuse import fuse_model
    from .registry import detect_variant

    name = args.model
    if args.checkpoint is not None and not args.checkpoint.exists():
        raise UsageError(f"--checkpoint: file not found: {args.checkpoint}")
    if name is None:
        name = detect_variant(args.checkpoint) if args.checkpoint is not None else "repvit"
    model = load_pretrained(name, checkpoint=args.checkpoint, device=args.device)
    return fuse_model(model, inplace=True), name


# ---------------------------------------------------------------- segment
def cmd_segment(args: argparse.Namespace) -> int:
    from .inference.masks import mask_record
    from .inference.predictor import SamPredictor
    from .io import load_image, save_png_atomic
    from .utils import write_json_atomic
    from .visualize import mask_to_png, overlay

    if not args.point and not args.box:
        raise UsageError("segment: give at least one --point X,Y[,LABEL] or --box X0,Y0,X1,Y1")
    if not args.image.exists():
        raise UsageError(f"segment: image not found: {args.image}")
    image = load_image(args.image)
    h, w = image.shape[:2]
    points = np.array([p[:2] for p in args.point], dtype=np.float64) if args.point else None
    labels = np.array([int(p[2]) for p in args.point]) if args.point else None
    boxes = np.array(args.box, dtype=np.float64) if args.box else None

    model, name = load_model(args)
    predictor = SamPredictor(model)
    predictor.set_image(image)
    # One point alone is ambiguous: ask for 3 candidates and keep the best, unless --multimask.
    ambiguous = boxes is None and len(args.point) == 1
    masks, scores, _ = predictor.predict(points, labels, boxes, multimask_output=args.multimask or ambiguous)
    if masks.ndim == 3:  # one prompt group -> add the box axis
        masks, scores = masks[None], scores[None]
    if ambiguous and not args.multimask:
        best = scores.argmax(axis=1)
        masks = masks[np.arange(len(masks)), best][:, None]
        scores = scores[np.arange(len(scores)), best][:, None]

    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    records, flat = [], []
    for b in range(masks.shape[0]):
        for k in range(masks.shape[1]):
            fname = f"mask_{len(flat):03d}.png"
            save_png_atomic(mask_to_png(masks[b, k]), out / fname)
            records.append(mask_record(masks[b, k], scores[b, k], file=fname, prompt_index=b, candidate=k))
            flat.append(masks[b, k])
    save_png_atomic(overlay(image, flat, points=points, labels=labels, boxes=boxes), out / "overlay.png")
    write_json_atomic(
        out / "masks.json",
        {
            "image": str(args.image),
            "height": h,
            "width": w,
            "model": name,
            "checkpoint": str(args.checkpoint) if args.checkpoint else None,
            "prompts": {
                "points": [] if points is None else [[*map(float, p), int(lbl)] for p, lbl in zip(points, labels)],
                "boxes": [] if boxes is None else boxes.tolist(),
            },
            "masks": records,
        },
    )
    print(f"wrote {len(flat)} mask(s), overlay.png and masks.json to {out}")
    return EXIT_OK


def add_segment(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment an image from point and box prompts", description=cmd_segment.__doc__)
    p.add_argument("image", type=Path, help="image file (JPEG, PNG, TIFF, WebP, BMP)")
    p.add_argument("--point", type=point_arg, action="append", default=[], metavar="X,Y[,LABEL]",
                   help="a point in image pixels; LABEL 1 = foreground (default), 0 = background; repeatable")
    p.add_argument("--box", type=box_arg, action="append", default=[], metavar="X0,Y0,X1,Y1",
                   help="a box in image pixels; repeatable (each box is segmented separately, with the points)")
    p.add_argument("--multimask", action="store_true", help="write all 3 candidate masks per prompt")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    add_model_args(p)
    p.set_defaults(func=cmd_segment)


@dataclass(frozen=True)
class Command:
    """A subcommand: ``add`` registers its parser on the subparsers action. It is a function or a
    ``"module:function"`` string, imported only when the parser is built, so ``repvit-sam --help``
    never imports a feature's heavy optional dependencies (those belong inside its ``run``)."""

    name: str
    add: Union[str, Callable[[argparse._SubParsersAction], None]]

    def register(self, sub: argparse._SubParsersAction) -> None:
        add = self.add
        if isinstance(add, str):
            module, _, func = add.partition(":")
            add = getattr(importlib.import_module(module, __package__), func)
        add(sub)


COMMANDS = (
    Command("segment", add_segment),
    Command("bench", ".bench:add_parser"),
    Command("everything", ".everything:add_parser"),
    Command("distill", ".distill.cli:add_parser"),
    Command("finetune", ".train.finetune:add_parser"),
    Command("export", ".export.cli:add_parser"),
    Command("eval", ".evaluation.cli:add_parser"),
    Command("serve", ".serve.cli:add_parser"),
    Command("synth", ".synthetic.cli:add_parser"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="repvit-sam", description="RepViT-SAM, MobileSAM and SAM: segment anything, fast.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for c in COMMANDS:
        c.register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return EXIT_USAGE
        return int(args.func(args))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_RUNTIME
    except Exception as e:
        from .inference.prompts import PromptError

        if debug:
            traceback.print_exc()
        text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        message = text.strip().splitlines()[0] if text.strip() else type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE if isinstance(e, (PromptError, KeyError)) else EXIT_RUNTIME
