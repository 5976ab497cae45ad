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
from typing import Any, List, Optional, Sequence, Tuple

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
DEVICE_HELP = "torch device (default: cuda, this rank's GPU under torchrun, when a GPU is available; else cpu)"


def add_device_arg(p: argparse.ArgumentParser) -> None:
    """``--device``, the same rule in every command (:func:`repvit_sam.utils.resolve_device`)."""
    p.add_argument("--device", default=None, help=DEVICE_HELP)


def add_output_arg(p: argparse.ArgumentParser, help: str, required: bool = True) -> None:
    """``-o/--output`` (every command's output option; ``--out`` is accepted as an alias)."""
    p.add_argument("-o", "--output", "--out", dest="output", type=Path, required=required, metavar="PATH", help=help)


def add_model_args(p: argparse.ArgumentParser) -> None:
    from .registry import list_models

    p.add_argument("--model", help=f"model name: {', '.join(list_models())}, or a test-size tiny_* variant "
                   "(default repvit; with --checkpoint, detected)")
    p.add_argument("--checkpoint", type=Path, help="checkpoint file; always wins over the cache / download")
    add_device_arg(p)


def load_model(args: argparse.Namespace):
    """(model fused for inference, its official name) from --model / --checkpoint."""
    from .hub import load_pretrained
    from .modeling.fuse import fuse_model
    from .registry import detect_variant

    from .utils import resolve_device

    args.device = resolve_device(args.device)
    name = args.model
    if args.checkpoint is not None and not args.checkpoint.exists():
        raise UsageError(f"--checkpoint: file not found: {args.checkpoint}")
    if name is None:
        name = detect_variant(args.checkpoint) if args.checkpoint is not None else "repvit"
    model = load_pretrained(name, checkpoint=args.checkpoint, device=args.device)
    return fuse_model(model, inplace=True), name


@dataclass(frozen=True)
class Command:
    """A subcommand, registered once: its name and one-line help, and the module that defines
    ``add_arguments(parser)`` and ``run(args) -> exit status``. The module is imported only when
    the parser is built, so a feature's heavy optional dependencies belong inside its ``run``."""

    name: str
    help: str
    module: str

    def load(self) -> Any:
        return importlib.import_module(self.module, __package__)

    def register(self, sub: argparse._SubParsersAction) -> None:
        mod = self.load()
        p = sub.add_parser(self.name, help=self.help, description=self.help)
        mod.add_arguments(p)
        p.set_defaults(handler=mod.run)  # not "run": a command may have a --run option


COMMANDS = (
    Command("segment", "segment an image from point and box prompts", ".segment"),
    Command("everything", "segment everything in images or folders (overlay PNG + SA-1B JSON per image)", ".everything"),
    Command("bench", "latency of every image-encoder backend side by side, and of the mask decoder", ".bench"),
    Command("export", "export a model to ONNX, Core ML, ExecuTorch or LiteRT", ".export.cli"),
    Command("distill", "train your own RepViT-SAM from a SAM teacher (embed, train, export)", ".distill.cli"),
    Command("finetune", "fine-tune a model on your own instance masks with box / point prompts and correction clicks", ".train.finetune"),
    Command("eval", "zero-shot benchmarks: COCO, LVIS, SegInW, BSDS, DUTS, MVTec; DAVIS 2017, UVO", ".evaluation.cli"),
    Command("serve", "web demo: click to segment in the browser", ".serve.cli"),
    Command("track", "track objects through a video (folder of frames or video file) from point, box or mask prompts", ".video.cli"),
    Command("synth", "write a synthetic data set, deterministic in --seed: 'images' (PNG + COCO instances JSON + "
            "SA-1B JSON per image) or 'video' (DAVIS 2017 layout + YouTube-VIS-style JSON)", ".synthetic.cli"),
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
        return int(args.handler(args))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_RUNTIME
    except Exception as e:
        from .inference.prompts import PromptError
        from .utils import one_line

        if debug:
            traceback.print_exc()
        print(f"error: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(e, (PromptError, KeyError)) else EXIT_RUNTIME
