"""``repvit-sam track VIDEO_OR_DIR --point ... --box ... --mask ... -o OUT``.

Writes ``OUT/masks/<frame>.png`` (DAVIS palette PNGs: index = object id), ``OUT/overlay.mp4``
(masks and tracked points over the frames) and ``OUT/masks.json`` (per frame, per object: COCO
RLE, area, XYWH box, predicted IoU). Prompts are in pixels of the frames; an object is
prompted on one frame and tracked forward and backward from it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List, Tuple



def _ints(text: str, what: str, lo: int, hi: int) -> List[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not lo <= len(values) <= hi:
        raise argparse.ArgumentTypeError(f"{what} takes {lo}..{hi} numbers, got {text!r}")
    return values


def _index(value: float, what: str, text: str) -> int:
    if value != int(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{what} must be a whole number >= 0 in {text!r}")
    return int(value)


def point_arg(text: str) -> Tuple[int, float, float, int, int]:
    """FRAME,X,Y[,LABEL[,OBJ]] -> (frame, x, y, label (default 1), object id (default 1))."""
    v = _ints(text, "--point", 3, 5)
    label = int(v[3]) if len(v) > 3 else 1
    if len(v) > 3 and v[3] not in (0.0, 1.0):
        raise argparse.ArgumentTypeError(f"--point label must be 1 (foreground) or 0 (background), got {text!r}")
    obj = _index(v[4], "the object id", text) if len(v) > 4 else 1
    return _index(v[0], "the frame", text), v[1], v[2], label, obj


def box_arg(text: str) -> Tuple[int, List[float], int]:
    """FRAME,X0,Y0,X1,Y1[,OBJ] -> (frame, box, object id (default 1))."""
    v = _ints(text, "--box", 5, 6)
    obj = _index(v[5], "the object id", text) if len(v) > 5 else 1
    return _index(v[0], "the frame", text), v[1:5], obj


def mask_arg(text: str) -> Tuple[int, Path]:
    """FRAME,PNG."""
    frame, sep, path = text.partition(",")
    if not sep or not path:
        raise argparse.ArgumentTypeError(f"--mask takes FRAME,PNG, got {text!r}")
    try:
        f = int(frame)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--mask frame must be a whole number, got {text!r}") from None
    if f < 0:
        raise argparse.ArgumentTypeError(f"--mask frame must be >= 0, got {text!r}")
    return f, Path(path)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..cli import add_model_args
    from .options import add_arguments as add_video_options

    p.add_argument("video", type=Path, help="a folder of frames (JPEG, PNG, ...) or a video file (mp4, webm, avi, ...)")
    p.add_argument("--point", type=point_arg, action="append", default=[], metavar="FRAME,X,Y[,LABEL[,OBJ]]",
                   help="a point on frame FRAME (pixels); LABEL 1 foreground (default) / 0 background; OBJ the object id (default 1); repeatable")
    p.add_argument("--box", type=box_arg, action="append", default=[], metavar="FRAME,X0,Y0,X1,Y1[,OBJ]",
                   help="a box on frame FRAME (pixels, XYXY) for object OBJ (default 1); repeatable")
    p.add_argument("--mask", type=mask_arg, action="append", default=[], metavar="FRAME,PNG",
                   help="a mask PNG for frame FRAME: a label PNG (palette or grayscale; each value k > 0 is object k) "
                        "or a binary mask (0 / 255: one new object); repeatable")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument("--direction", choices=("both", "forward", "backward"), default="both",
                   help="propagate from the prompted frames in both directions (default), or one")
    p.add_argument("--video-out", default="overlay.mp4", metavar="NAME",
                   help="overlay video file name in OUT (.mp4, .webm, .avi, .mkv; default overlay.mp4); 'none' skips it")
    p.add_argument("--backend", default=None, help="image-encoder backend (see `repvit-sam bench`), default: the fused model")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_args(p)
    add_video_options(p)


def read_mask_png(path: Path, size: Tuple[int, int]) -> Dict[int, Any]:
    """{object id: (H, W) bool} from a mask PNG: palette / grayscale labels (values > 0), where
    a binary 0/255 (or 0/1) image counts as one object with id 0 (the caller assigns one)."""
    import numpy as np

    from ..cli import UsageError
    from ..evaluation.datasets import DatasetError
    from ..evaluation.video_datasets import read_label_png

    if not path.is_file():
        raise UsageError(f"--mask: file not found: {path}")
    try:
        labels = read_label_png(path, None, "mask")
    except DatasetError as e:
        raise UsageError(f"--mask: {e}") from None
    if labels.shape != tuple(size):
        raise UsageError(f"--mask {path} is {labels.shape[1]}x{labels.shape[0]} but the video's frames are {size[1]}x{size[0]}")
    values = [int(v) for v in np.unique(labels) if v != 0]
    if not values:
        raise UsageError(f"--mask {path} is empty (all 0)")
    if values in ([255], [1]) and not _is_palette(path):
        return {0: labels > 0}
    return {v: labels == v for v in values}


def _is_palette(path: Path) -> bool:
    from PIL import Image

    with Image.open(path) as im:
        return im.mode == "P"


def build_prompts(args: argparse.Namespace, size: Tuple[int, int]):
    """The command line's prompts as :class:`Prompts` (usage errors for bad ones)."""
    import numpy as np

    from ..cli import UsageError
    from ..inference.prompts import PromptError
    from .prompts import Prompts

    prompts = Prompts()
    try:
        for frame, x, y, label, obj in args.point:
            if obj < 1:
                raise UsageError(f"--point object ids are >= 1, got {obj}")
            prompts.add(frame, obj, points=np.array([[x, y]]), labels=np.array([label]))
        for frame, box, obj in args.box:
            if obj < 1:
                raise UsageError(f"--box object ids are >= 1, got {obj}")
            prompts.add(frame, obj, box=np.array(box))
        for frame, path in args.mask:
            for obj, m in read_mask_png(path, size).items():
                if obj == 0:
                    obj = max([0, *prompts.objects]) + 1
                elif obj in prompts.objects:
                    raise UsageError(f"--mask {path}: object id {obj} is already prompted on frame {prompts.objects[obj].frame}")
                prompts.add(frame, obj, mask=m)
    except PromptError as e:
        raise UsageError(str(e)) from None
    if not len(prompts):
        raise UsageError("track: give at least one --point, --box or --mask")
    if max(prompts.objects) > 255:
        raise UsageError(f"object id {max(prompts.objects)} is too large: ids are 1..255 (palette indices of the mask PNGs)")
    return prompts


def frame_names(src) -> List[str]:
    """Output PNG names: the frame files' stems for a folder, else 00000, 00001, ..."""
    from .frames import FolderFrames

    if isinstance(src, FolderFrames):
        return [p.stem for p in src.files]
    return [f"{i:05d}" for i in range(len(src))]


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from ..cli import UsageError, load_model
    from ..evaluation.tasks.common import progress
    from ..inference.masks import rle_to_mask
    from ..inference.prompts import PromptError
    from ..utils import write_json_atomic
    from .frames import FrameError, open_frames
    from .options import from_args
    from .output import VideoWriter, mask_entry, overlay_frame, save_label_png
    from .predictor import VideoPredictor

    options = from_args(args)
    if not args.video.exists():
        raise UsageError(f"track: video not found: {args.video}")
    if args.video_out != "none":
        from .output import VIDEO_CODECS

        if Path(args.video_out).name != args.video_out:
            raise UsageError(f"--video-out is a file name inside OUT, got {args.video_out!r}")
        if Path(args.video_out).suffix.lower() not in VIDEO_CODECS:
            raise UsageError(f"--video-out {args.video_out}: use one of {', '.join(VIDEO_CODECS)} (or none)")
    try:
        src = open_frames(args.video)
    except FrameError as e:
        raise UsageError(str(e)) from None
    n, (h, w) = len(src), src.size
    prompts = build_prompts(args, (h, w))
    try:
        prompts.validate(n, (h, w))
    except PromptError as e:
        raise UsageError(str(e)) from None

    model, name = load_model(args)
    vp = VideoPredictor(model, options, backend=args.backend)
    out: Path = args.output
    (out / "masks").mkdir(parents=True, exist_ok=True)
    names = frame_names(src)
    records: Dict[int, Dict[str, Any]] = {}
    doc: Dict[str, Any] = {
        "video": str(args.video), "num_frames": n, "height": h, "width": w, "fps": src.fps,
        "model": name, "checkpoint": str(args.checkpoint) if args.checkpoint else None, "backend": args.backend,
        "options": dataclasses.asdict(options), "direction": args.direction,
        "objects": [{"id": p.obj_id, "prompt_frame": p.frame,
                     "prompt": "mask" if p.mask is not None else "+".join(k for k, v in (("points", p.points), ("box", p.box)) if v is not None)}
                    for p in sorted(prompts.objects.values(), key=lambda p: p.obj_id)],
        "complete": False, "frames": [],
    }
    lo = min(p.frame for p in prompts.objects.values())
    hi = max(p.frame for p in prompts.objects.values())
    total = {"both": n, "forward": n - lo, "backward": hi + 1}[args.direction]

    def save_json() -> None:
        doc["frames"] = [records[i] for i in sorted(records)]
        write_json_atomic(out / "masks.json", doc)

    points: Dict[int, Dict[int, Any]] = {}
    try:
        for r in progress(vp.propagate(src, prompts, args.direction), "track", total=total, enabled=not args.no_progress):
            save_label_png(r.label_map((h, w)), out / "masks" / f"{names[r.index]}.png")
            records[r.index] = {"frame": r.index, "file": f"masks/{names[r.index]}.png",
                                "objects": {str(k): mask_entry(m, r.scores[k]) for k, m in sorted(r.masks.items())}}
            points[r.index] = r.points
    except BaseException:
        if records:
            save_json()  # what was tracked before the error stays usable
        raise
    doc["complete"] = True
    save_json()
    wrote = [f"{len(records)} mask PNGs in {out / 'masks'}", str(out / "masks.json")]
    if args.video_out != "none":
        fps = src.fps or 24.0
        with VideoWriter(out / args.video_out, fps, (h, w)) as writer:
            for i, frame in progress(src.frames(0, n), "overlay", total=n, enabled=not args.no_progress):
                rec = records.get(i)
                masks = {} if rec is None else {int(k): rle_to_mask(o["segmentation"]) for k, o in rec["objects"].items()}
                writer.write(overlay_frame(frame, masks, points.get(i)))
        wrote.append(str(out / args.video_out))
    print("wrote " + ", ".join(wrote))
    return 0
