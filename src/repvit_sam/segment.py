"""``repvit-sam segment IMAGE --point X,Y[,LABEL] --box X0,Y0,X1,Y1 -o OUT``: prompted masks of
one image, written as PNGs, an overlay and ``masks.json`` (COCO RLE; bbox in the package's box
convention, :mod:`repvit_sam.inference.masks`)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .cli import EXIT_OK, UsageError, add_model_args, add_output_arg, box_arg, load_model, point_arg


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", type=Path, help="image file (JPEG, PNG, TIFF, WebP, BMP)")
    p.add_argument("--point", type=point_arg, action="append", default=[], metavar="X,Y[,LABEL]",
                   help="a point in image pixels; LABEL 1 = foreground (default), 0 = background; repeatable")
    p.add_argument("--box", type=box_arg, action="append", default=[], metavar="X0,Y0,X1,Y1",
                   help="a box in image pixels; repeatable (each box is segmented separately, with the points)")
    p.add_argument("--multimask", action="store_true", help="write all 3 candidate masks per prompt")
    add_output_arg(p, "output folder")
    add_model_args(p)


def run(args: argparse.Namespace) -> int:
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
