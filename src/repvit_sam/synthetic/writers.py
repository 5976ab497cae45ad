"""Writing synthetic scenes and videos in the layouts evaluators and trainers read.

* images: ``DIR/images/NNNNNN.png``, ``DIR/annotations.json`` (COCO instances, compressed RLE),
  ``DIR/sa1b/NNNNNN.json`` (one SA-1B-style file per image);
* videos: the DAVIS 2017 layout ``DIR/JPEGImages/480p/SEQ/NNNNN.jpg``,
  ``DIR/Annotations/480p/SEQ/NNNNN.png`` (palette PNGs, index = object id, 0 = background) and
  ``DIR/ImageSets/2017/val.txt``, plus ``DIR/vis_instances.json`` (YouTube-VIS style, as UVO
  uses: per-object lists of per-frame RLE or null);
* both: ``DIR/preview.png`` (a contact sheet with the annotations overlaid) and
  ``DIR/synth.json`` (what was generated: kind, seed, count, size, file lists).

Boxes are XYWH in segment-anything's convention: ``[x_min, y_min, x_max - x_min, y_max - y_min]``
over the covered pixel indices (so a 1-pixel mask has w = h = 0), as in SA-1B JSON.
Every file is written atomically.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..inference.masks import mask_to_box_xywh as box_xywh  # the package's box convention
from ..utils import atomic_write, write_json_atomic
from .scene import Scene, Video, make_scene, make_video
from .shapes import KINDS

MANIFEST = "synth.json"
FORMAT_VERSION = 1
# Sub-folders and files each kind owns (removed before regenerating into the same folder).
_OWNED = {
    "images": ("images", "sa1b", "annotations.json", "preview.png", MANIFEST),
    "video": ("JPEGImages", "Annotations", "ImageSets", "vis_instances.json", "preview.png", MANIFEST),
}


#: The two kinds of set ``synth`` writes.
KINDS_OF_SETS = ("images", "video")


class SynthOutputError(ValueError):
    """The output folder holds something other than a synthetic set of the same kind."""


# -------------------------------------------------------------------------------- mask helpers
def inner_point(mask: np.ndarray) -> List[float]:
    """The XY pixel of ``mask`` farthest from its border (first in row-major order on ties)."""
    from scipy.ndimage import distance_transform_edt

    dist = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return [float(x), float(y)]


def davis_palette() -> List[int]:
    """The 256-colour palette DAVIS annotation PNGs use (PASCAL VOC's): colour i spreads the bits
    of i over R, G, B from the most significant bit down; 768 ints R, G, B, R, ..."""
    out: List[int] = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out += [r, g, b]
    return out


def _categories() -> List[Dict[str, Any]]:
    return [{"id": i + 1, "name": k, "supercategory": "shape"} for i, k in enumerate(KINDS)]


def _category_id(kind: str) -> int:
    return KINDS.index(kind) + 1


def _save_jpeg_atomic(image: np.ndarray, path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=95, subsampling=0)
    with atomic_write(path) as f:
        f.write(buf.getvalue())


# ------------------------------------------------------------------------------ output folder
def prepare_output(out: Path, kind: str) -> None:
    """Make ``out`` ready for a ``kind`` set: create it if missing; if it already holds a set of
    the same kind (its ``synth.json`` says so), remove that set's files; refuse anything else."""
    import json

    if out.exists() and not out.is_dir():
        raise SynthOutputError(f"output {out} is a file, not a folder; give a folder with -o")
    if out.is_dir() and any(out.iterdir()):
        manifest = out / MANIFEST
        try:
            previous = json.loads(manifest.read_text(encoding="utf-8")).get("kind")
        except (OSError, ValueError, AttributeError):
            previous = None
        if previous != kind:
            what = f"a synthetic '{previous}' set" if previous in _OWNED else "other files"
            raise SynthOutputError(f"output folder {out} is not empty (it holds {what}); give an empty or new folder, or one made by 'synth {kind}'")
        for name in _OWNED[kind]:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _progress(iterable, total: int, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="item", disable=quiet)


def _contact_sheet(tiles: Sequence[Image.Image], columns: int) -> Image.Image:
    w, h = tiles[0].size
    rows = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * w + (columns - 1) * 4, rows * h + (rows - 1) * 4), (255, 255, 255))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * (w + 4), (i // columns) * (h + 4)))
    return sheet


# ------------------------------------------------------------------------------------ images
def scene_rng(seed: int, index: int, kind: str) -> np.random.Generator:
    """The generator of item ``index`` of a set: depends only on (seed, kind, index), so a set of
    N items is a prefix of a larger set with the same seed, and other seeds give other items."""
    return np.random.default_rng([int(seed), KINDS_OF_SETS.index(kind), int(index)])


def sa1b_record(scene: Scene, image_id: int, file_name: str) -> Dict[str, Any]:
    """One image's SA-1B-style JSON: ``image`` (image_id, file_name, width, height) and one
    annotation per instance (``id`` = instance index 1..K, segmentation as COCO RLE, area, bbox
    XYWH, one interior ``point_coords``, ``predicted_iou`` and ``stability_score`` 1.0 (ground
    truth), ``crop_box`` the whole image, ``[0, 0, W, H]`` as segment-anything writes it)."""
    from ..inference.masks import mask_to_rle

    h, w = scene.id_map.shape
    anns = []
    for k, mask in enumerate(scene.masks):
        anns.append({
            "id": k + 1,
            "segmentation": mask_to_rle(mask),
            "area": int(mask.sum()),
            "bbox": box_xywh(mask),
            "point_coords": [inner_point(mask)],
            "predicted_iou": 1.0,
            "stability_score": 1.0,
            "crop_box": [0, 0, w, h],
            "category": scene.categories[k],
        })
    return {"image": {"image_id": image_id, "file_name": file_name, "width": w, "height": h}, "annotations": anns}


def _write_one_image(job: Tuple[Path, int, int, int, int, int, int, bool]) -> Tuple[str, List[Dict[str, Any]], Optional[Image.Image]]:
    """Generate scene ``i`` of ``seed``, write its PNG and SA-1B JSON; return its file name, one
    annotation per mask (without ids) and, when asked, its preview tile."""
    from ..inference.masks import mask_to_rle
    from ..io import save_png_atomic
    from ..visualize import overlay

    out, seed, i, height, width, min_objects, max_objects, want_tile = job
    scene = make_scene(scene_rng(seed, i, "images"), height, width, min_objects=min_objects, max_objects=max_objects)
    name = f"{i:06d}.png"
    save_png_atomic(scene.image, out / "images" / name)
    anns = [{"category_id": _category_id(scene.categories[k]), "segmentation": mask_to_rle(mask),
             "area": int(mask.sum()), "bbox": box_xywh(mask), "iscrowd": 0} for k, mask in enumerate(scene.masks)]
    write_json_atomic(out / "sa1b" / f"{i:06d}.json", sa1b_record(scene, i + 1, name))
    tile = overlay(scene.image, list(scene.masks), alpha=0.45) if want_tile else None
    return name, anns, tile


def write_images(out: Path, count: int, seed: int, size: Tuple[int, int] = (256, 256), *,
                 min_objects: int = 3, max_objects: int = 8, quiet: bool = False, workers: int = 1) -> Dict[str, Any]:
    """Generate ``count`` scenes of ``size`` (W, H) into ``out``; returns the manifest written.

    ``workers > 1`` renders scenes in that many processes; scene ``i`` depends only on
    ``(seed, i)`` and ids are given in image order, so the files are the same for any ``workers``."""
    from ..io import save_png_atomic

    width, height = size
    prepare_output(out, "images")
    (out / "images").mkdir()
    images: List[Dict[str, Any]] = []
    annotations: List[Dict[str, Any]] = []
    tiles: List[Image.Image] = []
    jobs = ((out, seed, i, height, width, min_objects, max_objects, i < 16) for i in range(count))
    pool = None
    if workers > 1 and count > 1:
        import multiprocessing as mp

        pool = mp.get_context("spawn").Pool(min(workers, count))
        results = pool.imap(_write_one_image, jobs, chunksize=max(1, min(16, count // (4 * workers))))
    else:
        results = map(_write_one_image, jobs)
    try:
        for i, (name, anns, tile) in enumerate(_progress(results, count, "synth images", quiet)):
            images.append({"id": i + 1, "file_name": name, "width": width, "height": height})
            for ann in anns:
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, **ann})
            if tile is not None:
                tiles.append(tile)
    finally:
        if pool is not None:
            pool.terminate()
    coco = {
        "info": {"description": f"repvit-sam synthetic shapes, seed {seed}", "version": str(FORMAT_VERSION)},
        "licenses": [],
        "images": images, "annotations": annotations, "categories": _categories(),
    }
    write_json_atomic(out / "annotations.json", coco)
    if tiles:
        save_png_atomic(_contact_sheet(tiles, 4), out / "preview.png")
    manifest = {"kind": "images", "version": FORMAT_VERSION, "seed": seed, "count": count, "size": [width, height],
                "objects": [min_objects, max_objects], "instances": len(annotations)}
    write_json_atomic(out / MANIFEST, manifest)
    return manifest


# ------------------------------------------------------------------------------------- video
def write_video(out: Path, count: int, seed: int, size: Tuple[int, int] = (320, 240), *,
                num_frames: Optional[int] = None, num_objects: Optional[int] = None,
                reenter: Optional[bool] = None, quiet: bool = False) -> Dict[str, Any]:
    """Generate ``count`` sequences of ``size`` (W, H) into ``out`` in the DAVIS 2017 layout plus
    ``vis_instances.json``; returns the manifest written."""
    from ..inference.masks import mask_to_rle
    from ..io import save_png_atomic
    from ..visualize import overlay

    width, height = size
    prepare_output(out, "video")
    palette = davis_palette()
    colours = np.array(palette, dtype=np.uint8).reshape(256, 3)
    names, videos, annotations, tiles, reentering = [], [], [], [], {}
    for i in _progress(range(count), count, "synth video", quiet):
        video = make_video(scene_rng(seed, i, "video"), height, width, num_frames=num_frames,
                           num_objects=num_objects, reenter=reenter)
        seq = f"seq{i:04d}"
        names.append(seq)
        reentering[seq] = video.reentering
        T = len(video.frames)
        (out / "JPEGImages" / "480p" / seq).mkdir(parents=True)
        (out / "Annotations" / "480p" / seq).mkdir(parents=True)
        files = []
        for t in range(T):
            _save_jpeg_atomic(video.frames[t], out / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg")
            png = Image.fromarray(video.id_maps[t], mode="P")
            png.putpalette(palette)
            save_png_atomic(png, out / "Annotations" / "480p" / seq / f"{t:05d}.png")
            files.append(f"{seq}/{t:05d}.jpg")
        videos.append({"id": i + 1, "name": seq, "width": width, "height": height, "length": T, "file_names": files})
        for k in range(1, video.num_objects + 1):
            segs, areas, boxes = [], [], []
            for t in range(T):
                m = video.id_maps[t] == k
                if m.any():
                    segs.append(mask_to_rle(m))
                    areas.append(int(m.sum()))
                    boxes.append(box_xywh(m))
                else:
                    segs.append(None)
                    areas.append(None)
                    boxes.append(None)
            annotations.append({
                "id": len(annotations) + 1, "video_id": i + 1, "object_id": k,
                "category_id": _category_id(video.categories[k - 1]), "iscrowd": 0,
                "width": width, "height": height, "segmentations": segs, "areas": areas, "bboxes": boxes,
            })
        if len(tiles) < 24:  # up to 4 sequences x 6 frames
            for t in np.linspace(0, T - 1, 6).round().astype(int):
                ids = video.id_maps[t]
                tiles.append(overlay(video.frames[t], [ids == k for k in range(1, video.num_objects + 1)],
                                     alpha=0.45, colors=colours[1 : video.num_objects + 1]))
    with atomic_write(out / "ImageSets" / "2017" / "val.txt", "w") as f:
        f.write("".join(n + "\n" for n in names))
    write_json_atomic(out / "vis_instances.json", {
        "info": {"description": f"repvit-sam synthetic shape videos, seed {seed}", "version": str(FORMAT_VERSION),
                 "file_names_relative_to": "JPEGImages/480p"},
        "licenses": [], "videos": videos, "annotations": annotations, "categories": _categories(),
    })
    if tiles:
        save_png_atomic(_contact_sheet(tiles, 6), out / "preview.png")
    manifest = {"kind": "video", "version": FORMAT_VERSION, "seed": seed, "count": count, "size": [width, height],
                "sequences": names, "reentering": reentering}
    write_json_atomic(out / MANIFEST, manifest)
    return manifest
