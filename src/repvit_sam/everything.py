"""``repvit-sam everything``: segment everything in many images, with SA-1B-style output.

For each image ``<name>.<ext>`` (files given, or every image in the folders given; ``-r`` goes
into sub-folders), under OUTDIR (keeping the images' paths relative to the folder given):

* ``<name>.json``: SA-1B's annotation format ({"image": {...}, "annotations": [{id,
  segmentation (COCO RLE), bbox [x, y, w, h], area, predicted_iou, point_coords,
  stability_score, crop_box}, ...]}), written last and atomically: its presence marks the
  image done, so a re-run skips it (``--overwrite`` redoes it);
* ``<name>_overlay.png``: the masks over the image, largest first, in random colours;
* with ``--masks``: ``<name>_masks/NNNN.png``, one 0/255 PNG per annotation (same order).

An image that cannot be read or segmented is reported and skipped; the others finish. The run
ends with ``done N, skipped N, failed N``; the exit status is 1 if any image failed.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Sequence, Tuple

from .utils import IMAGE_SUFFIXES



@dataclass
class Job:
    image: Path
    stem: Path  # output path without suffix, relative to OUTDIR


@dataclass
class Summary:
    done: List[Path] = field(default_factory=list)
    skipped: List[Path] = field(default_factory=list)
    failed: List[Tuple[Path, str]] = field(default_factory=list)

    def line(self) -> str:
        return f"done {len(self.done)}, skipped {len(self.skipped)}, failed {len(self.failed)}"


def collect_jobs(inputs: Sequence[Path], recursive: bool = False) -> List[Job]:
    """The images to process and their output stems. Raises ValueError (with the reason) for a
    missing input, a folder without images, or two images that would write the same outputs."""
    jobs: List[Job] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            pattern = "**/*" if recursive else "*"
            found = sorted(p for p in item.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                hint = "" if recursive else " (use -r to look in sub-folders)"
                raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {item}{hint}")
            jobs += [Job(p, p.relative_to(item).with_suffix("")) for p in found]
        elif item.is_file():
            jobs.append(Job(item, Path(item.stem)))
        else:
            raise ValueError(f"not found: {item}")
    seen: Dict[Path, Path] = {}
    for job in jobs:
        if job.stem in seen:
            raise ValueError(
                f"{seen[job.stem]} and {job.image} would both write {job.stem}.json; give them in separate runs or folders"
            )
        seen[job.stem] = job.image
    return jobs


def sa1b_record(records: List[Dict[str, Any]], image_path: Path, height: int, width: int, image_id: int = 0) -> Dict[str, Any]:
    """Generator records (output_mode='coco_rle') -> SA-1B's per-image annotation file."""
    annotations = []
    for i, r in enumerate(records):
        annotations.append(
            {
                "id": i,
                "segmentation": r["segmentation"],
                "bbox": [float(v) for v in r["bbox"]],
                "area": int(r["area"]),
                "predicted_iou": float(r["predicted_iou"]),
                "point_coords": r["point_coords"],
                "stability_score": float(r["stability_score"]),
                "crop_box": [float(v) for v in r["crop_box"]],
            }
        )
    return {
        "image": {"image_id": image_id, "width": int(width), "height": int(height), "file_name": image_path.name},
        "annotations": annotations,
    }


def process_image(generator: Any, job: Job, outdir: Path, write_masks: bool, image_id: int = 0) -> int:
    """Segment one image and write its outputs (JSON last). Returns the number of masks."""
    import numpy as np

    from .inference.masks import rle_to_mask
    from .io import load_image, save_png_atomic
    from .utils import write_json_atomic
    from .visualize import mask_to_png, overlay

    image = load_image(job.image)
    h, w = image.shape[:2]
    records = generator.generate(image)
    masks = [rle_to_mask(r["segmentation"]) for r in records]
    base = outdir / job.stem
    base.parent.mkdir(parents=True, exist_ok=True)
    if write_masks:
        folder = base.parent / f"{base.name}_masks"
        folder.mkdir(exist_ok=True)
        for i, m in enumerate(masks):
            save_png_atomic(mask_to_png(m), folder / f"{i:04d}.png")
    order = np.argsort([-int(m.sum()) for m in masks], kind="stable") if masks else []
    save_png_atomic(overlay(image, [masks[i] for i in order]), base.parent / f"{base.name}_overlay.png")
    write_json_atomic(base.parent / f"{base.name}.json", sa1b_record(records, job.image, h, w, image_id))
    return len(records)


def run_all(generator: Any, jobs: Iterable[Job], outdir: Path, write_masks: bool = False, overwrite: bool = False,
            progress: bool = True, share: Any = None) -> Summary:
    """Process every job; bad images are recorded in ``Summary.failed``, never raised. Under
    torchrun each rank takes its share of the jobs (:mod:`repvit_sam.parallel`; ``share``
    overrides the environment); image ids stay those of the whole list."""
    from .parallel import Share
    from tqdm import tqdm

    from .io import ImageError
    from .utils import one_line

    share = share or Share.from_env()
    mine = [(i, job) for i, job in enumerate(jobs) if share.owns(i)]
    summary = Summary()
    bar = tqdm(mine, desc="segment everything", unit="image", file=sys.stderr, disable=not progress)
    for image_id, job in bar:
        target = outdir / job.stem.parent / f"{job.stem.name}.json"
        if target.exists() and not overwrite:
            summary.skipped.append(job.image)
            continue
        try:
            n = process_image(generator, job, outdir, write_masks, image_id)
        except (ImageError, OSError, ValueError, RuntimeError) as e:
            text = one_line(e)
            summary.failed.append((job.image, text))
            tqdm.write(f"failed: {job.image}: {text}", file=sys.stderr)
            continue
        summary.done.append(job.image)
        bar.set_postfix_str(f"{job.image.name}: {n} masks")
    return summary


# --------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    from .cli import add_model_args, add_output_arg
    from .inference.amg.options import AmgOptions

    p.add_argument("inputs", type=Path, nargs="+", metavar="IMAGE_OR_DIR", help="image files and/or folders of images")
    add_output_arg(p, "output folder")
    p.add_argument("-r", "--recursive", action="store_true", help="also take images in sub-folders")
    p.add_argument("--masks", action="store_true", help="also write one PNG per mask")
    p.add_argument("--overwrite", action="store_true", help="redo images whose JSON already exists")
    AmgOptions.add_arguments(p)
    add_model_args(p)


def run(args: argparse.Namespace) -> int:
    from .cli import EXIT_OK, EXIT_RUNTIME, UsageError, load_model
    from .inference.amg import AmgOptions, SamAutomaticMaskGenerator

    try:
        jobs = collect_jobs(args.inputs, args.recursive)
        options = AmgOptions.from_namespace(args, output_mode="coco_rle")  # checked before the model loads
    except ValueError as e:
        raise UsageError(f"everything: {e}") from None
    model, name = load_model(args)
    generator = SamAutomaticMaskGenerator.from_options(model, options)
    args.output.mkdir(parents=True, exist_ok=True)
    summary = run_all(generator, jobs, args.output, write_masks=args.masks, overwrite=args.overwrite)
    for path, why in summary.failed:
        print(f"failed: {path}: {why}", file=sys.stderr)
    print(f"{summary.line()} (model {name}; outputs in {args.output})")
    return EXIT_RUNTIME if summary.failed else EXIT_OK
