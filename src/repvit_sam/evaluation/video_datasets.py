"""Readers for the video benchmarks' layouts (checked up front; one-line :class:`DatasetError`).

* DAVIS 2017 (semi-supervised): ``ROOT/ImageSets/2017/<split>.txt`` (sequence names),
  ``ROOT/JPEGImages/480p/SEQ/*.jpg`` and ``ROOT/Annotations/480p/SEQ/*.png`` (palette PNGs:
  index = object id, 0 background, 255 void). ``repvit-sam synth video`` writes this layout.
* A results folder (as the official tool reads): ``DIR/SEQ/NNNNN.png`` per annotated frame,
  named like the annotation, palette or grayscale PNGs whose values are object ids.
* YouTube-VIS-style JSON (UVO v1.0 dense, and ``vis_instances.json`` of ``synth video``):
  ``videos`` with ``id``, ``file_names`` (relative to an images folder), ``height``, ``width``;
  ``annotations`` with ``video_id``, per-frame ``segmentations`` (COCO RLE, polygons, or null
  where absent), ``iscrowd``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .datasets import DatasetError, _require_dir, _require_file, read_json

DAVIS_SITE = "https://davischallenge.org/davis2017/code.html"


# ---------------------------------------------------------------------------- DAVIS
@dataclass
class DavisSequence:
    """One sequence: its frames and its annotations (same stems, in order)."""

    name: str
    frames: List[Path]
    annotations: List[Path]


def davis_sequences(root: Path, split: str = "val", resolution: str = "480p", limit: Optional[int] = None,
                    names: Optional[Sequence[str]] = None) -> List[DavisSequence]:
    """The sequences of ``split`` (or ``names``), checked: every listed sequence has frames and
    one annotation per frame, the first frame annotated."""
    root = Path(root)
    _require_dir(root, "DAVIS folder")
    listing = root / "ImageSets" / "2017" / f"{split}.txt"
    if not listing.is_file():
        raise DatasetError(f"DAVIS folder {root} has no ImageSets/2017/{split}.txt (the list of {split} sequences); "
                           f"get the DAVIS 2017 trainval set from {DAVIS_SITE}")
    images = root / "JPEGImages" / resolution
    annotations = root / "Annotations" / resolution
    for path, what in ((images, "JPEGImages"), (annotations, "Annotations")):
        if not path.is_dir():
            raise DatasetError(f"DAVIS folder {root} has no {what}/{resolution} folder; get DAVIS 2017 from {DAVIS_SITE}")
    listed = [s.strip() for s in listing.read_text(encoding="utf-8").splitlines() if s.strip()]
    if names:
        unknown = [n for n in names if n not in listed]
        if unknown:
            raise DatasetError(f"sequence {unknown[0]!r} is not in {listing}")
        listed = [n for n in listed if n in names]
    if limit is not None:
        listed = listed[:limit]
    if not listed:
        raise DatasetError(f"{listing} lists no sequences")
    out = []
    for seq in listed:
        fdir, adir = images / seq, annotations / seq
        if not fdir.is_dir():
            raise DatasetError(f"sequence {seq} is listed in {listing.name} but {fdir} is missing")
        if not adir.is_dir():
            raise DatasetError(f"sequence {seq} is listed in {listing.name} but {adir} is missing")
        frames = sorted(fdir.glob("*.jpg")) or sorted(p for p in fdir.iterdir() if p.suffix.lower() in (".jpeg", ".png"))
        anns = sorted(adir.glob("*.png"))
        if not frames:
            raise DatasetError(f"sequence {seq} has no frames in {fdir}")
        if not anns:
            raise DatasetError(f"sequence {seq} has no annotations in {adir}")
        if anns[0].stem != frames[0].stem:
            raise DatasetError(f"sequence {seq}: the first frame {frames[0].name} has no annotation ({adir / (frames[0].stem + '.png')})")
        out.append(DavisSequence(seq, frames, anns))
    return out


def read_label_png(path: Path, size: Optional[tuple] = None, what: str = "annotation") -> np.ndarray:
    """(H, W) uint8 label image from a palette ('P') or grayscale ('L') PNG; one-line errors for
    a missing or unreadable file, another mode, or a size other than ``size`` (H, W)."""
    from PIL import Image, UnidentifiedImageError

    _require_file(path, what)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("P", "L", "1"):
                raise DatasetError(f"{what} {path} is a {im.mode} image: label PNGs are palette (P) or grayscale (L) images of object ids")
            labels = np.array(im.convert("L") if im.mode == "1" else im, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise DatasetError(f"{what} {path} cannot be read: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if im.mode == "1":
        labels = (labels > 0).astype(np.uint8)
    if size is not None and labels.shape != tuple(size):
        raise DatasetError(f"{what} {path} is {labels.shape[1]}x{labels.shape[0]}, expected {size[1]}x{size[0]}")
    return labels


def read_results(results: Path, seq: DavisSequence, size: tuple) -> List[np.ndarray]:
    """The result label images of ``seq`` from ``results/SEQ/<annotation name>.png``; a missing
    sequence folder or frame is an error naming it."""
    d = Path(results) / seq.name
    if not d.is_dir():
        raise DatasetError(f"the results folder {results} has no sequence {seq.name} ({d} is missing)")
    out = []
    for a in seq.annotations:
        p = d / a.name
        if not p.is_file():
            raise DatasetError(f"the results folder is missing frame {a.name} of sequence {seq.name} ({p})")
        out.append(read_label_png(p, size, "result"))
    return out


# ---------------------------------------------------------------------------- YouTube-VIS / UVO
@dataclass
class VisVideo:
    """One video of a YouTube-VIS-style JSON: frame files, size, and its ground-truth tracks
    (per-frame segmentations: RLE / polygons, or None where absent)."""

    id: int
    name: str
    frames: List[Path]
    height: int
    width: int
    tracks: List[Dict[str, Any]]


def default_vis_paths(root: Path, annotations: Optional[Path], images: Optional[Path]) -> tuple:
    """(annotations JSON, images folder): given ones, else the first that exists of
    ROOT/vis_instances.json, ROOT/UVO_video_val_dense.json, ROOT/annotations/UVO_video_val_dense.json;
    and ROOT/JPEGImages/480p, ROOT/uvo_videos_dense_frames, ROOT."""
    root = Path(root)
    _require_dir(root, "dataset folder")
    if annotations is None:
        candidates = [root / "vis_instances.json", root / "UVO_video_val_dense.json", root / "annotations" / "UVO_video_val_dense.json"]
        annotations = next((c for c in candidates if c.is_file()), None)
        if annotations is None:
            raise DatasetError(f"no YouTube-VIS-style JSON in {root} (looked for {', '.join(str(c.relative_to(root)) for c in candidates)}); "
                               "pass --annotations FILE")
    if images is None:
        candidates = [root / "JPEGImages" / "480p", root / "uvo_videos_dense_frames", root]
        images = next(c for c in candidates if c.is_dir())
    return Path(annotations), Path(images)


def load_vis(ann_file: Path, images: Path, limit: Optional[int] = None) -> List[VisVideo]:
    """Videos of a YouTube-VIS-style JSON with their tracks; every frame file must exist."""
    doc = read_json(ann_file, "video annotations")
    if not isinstance(doc, dict) or not isinstance(doc.get("videos"), list) or not isinstance(doc.get("annotations"), list):
        raise DatasetError(f"{ann_file} is not a YouTube-VIS-style JSON (needs 'videos' and 'annotations' lists)")
    by_video: Dict[int, List[Dict[str, Any]]] = {}
    for i, a in enumerate(doc["annotations"]):
        if not isinstance(a, dict) or "video_id" not in a or not isinstance(a.get("segmentations"), list):
            raise DatasetError(f"{ann_file}: annotation #{i} lacks video_id or a segmentations list")
        by_video.setdefault(int(a["video_id"]), []).append(a)
    videos = []
    for v in doc["videos"][: limit if limit is not None else None]:
        if not isinstance(v, dict) or not {"id", "file_names", "height", "width"} <= v.keys():
            raise DatasetError(f"{ann_file}: every video needs id, file_names, height and width")
        frames = [Path(images) / f for f in v["file_names"]]
        missing = [f for f in frames if not f.is_file()]
        if missing:
            raise DatasetError(f"video {v.get('name', v['id'])}: frame {missing[0]} not found (images folder {images})")
        tracks = by_video.get(int(v["id"]), [])
        for t in tracks:
            if len(t["segmentations"]) != len(frames):
                raise DatasetError(f"{ann_file}: annotation {t.get('id')} has {len(t['segmentations'])} segmentations "
                                   f"for video {v['id']}'s {len(frames)} frames")
        name = str(v.get("name") or Path(v["file_names"][0]).parent.name or v["id"])
        videos.append(VisVideo(int(v["id"]), name, frames, int(v["height"]), int(v["width"]), tracks))
    if not videos:
        raise DatasetError(f"{ann_file} has no videos")
    return videos


def segmentation_to_mask(seg: Any, height: int, width: int) -> Optional[np.ndarray]:
    """A YouTube-VIS per-frame segmentation (RLE, uncompressed RLE, polygons, or null) as an
    (H, W) bool mask, None where absent."""
    if seg is None:
        return None
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):  # polygons
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(seg, height, width)
    else:
        counts = seg["counts"]
        rle = {"size": seg["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(rle).astype(bool)
