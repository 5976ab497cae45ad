"""``repvit-sam synth images|video``: write a deterministic synthetic data set."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Tuple

DEFAULT_SIZE = {"images": (256, 256), "video": (320, 240)}
DEFAULT_COUNT = {"images": 100, "video": 10}


def size_arg(text: str) -> Tuple[int, int]:
    """``WxH`` -> (W, H), each 64..4096."""
    parts = text.lower().split("x")
    try:
        w, h = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must be WIDTHxHEIGHT in pixels, e.g. 256x256, got {text!r}") from None
    if not (64 <= w <= 4096 and 64 <= h <= 4096):
        raise argparse.ArgumentTypeError(f"--size sides must be 64..4096 pixels, got {text!r}")
    return w, h


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=("images", "video"), help="what to generate")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output folder: new, empty, or made earlier by the same 'synth KIND' (then replaced)")
    p.add_argument("--count", type=int, help="number of images (default 100) or sequences (default 10)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed (default 0); item i depends only on (seed, i), so use other seeds for held-out sets")
    p.add_argument("--size", type=size_arg, metavar="WxH", help="image/frame size (default 256x256 images, 320x240 video)")
    p.add_argument("--objects", type=str, metavar="MIN-MAX",
                   help="objects per image (default 3-8) or per sequence (default 1-4; one number fixes it)")
    p.add_argument("--frames", type=int, help="video: frames per sequence (default 24-40, drawn per sequence)")
    p.add_argument("--reenter", choices=("random", "always", "never"), default="random",
                   help="video: whether object 1 leaves the frame and comes back (default: a coin flip per sequence)")
    p.add_argument("--workers", type=int, default=1,
                   help="images: processes that render scenes (default 1); the files are the same for any number")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _objects(text: str | None, kind: str) -> Tuple[int, int] | None:
    from ..cli import UsageError

    if text is None:
        return None
    lo, _, hi = text.partition("-")
    try:
        a, b = int(lo), int(hi or lo)
    except ValueError:
        raise UsageError(f"--objects must be N or MIN-MAX, got {text!r}") from None
    if not 1 <= a <= b <= 254:
        raise UsageError(f"--objects needs 1 <= MIN <= MAX <= 254, got {text!r}")
    if kind == "video" and a != b:
        raise UsageError(f"--objects for video takes one number (objects per sequence), got {text!r}")
    return a, b


def run(args: argparse.Namespace) -> int:
    from ..cli import UsageError
    from .writers import SynthOutputError, write_images, write_video

    count = DEFAULT_COUNT[args.kind] if args.count is None else args.count
    if count < 1:
        raise UsageError(f"--count must be >= 1, got {count}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    if args.frames is not None and args.frames < 8:
        raise UsageError(f"--frames must be >= 8, got {args.frames}")
    if args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    if args.kind == "images" and (args.frames is not None or args.reenter != "random"):
        raise UsageError("--frames and --reenter apply to 'synth video' only")
    size = args.size or DEFAULT_SIZE[args.kind]
    objects = _objects(args.objects, args.kind)
    try:
        if args.kind == "images":
            lo, hi = objects or (3, 8)
            m = write_images(args.output, count, args.seed, size, min_objects=lo, max_objects=hi, quiet=args.quiet,
                             workers=args.workers)
            print(f"wrote {count} images with {m['instances']} instances to {args.output} "
                  f"(annotations.json, sa1b/, preview.png)")
        else:
            reenter = {"random": None, "always": True, "never": False}[args.reenter]
            m = write_video(args.output, count, args.seed, size, num_frames=args.frames,
                            num_objects=objects[0] if objects else None, reenter=reenter, quiet=args.quiet)
            print(f"wrote {count} sequences to {args.output} (DAVIS 2017 layout, vis_instances.json, preview.png)")
    except SynthOutputError as e:
        raise UsageError(str(e)) from None
    return 0
