"""Readers for each benchmark's on-disk layout, as distributed.

Every reader checks the layout up front and raises :class:`DatasetError` with one line that
names what is missing or wrong and what layout was expected; an empty dataset is an error too.

Layouts (ROOT is ``--data``):

* COCO / LVIS instances: an instances JSON (``images``, ``annotations``, ``categories``) and a
  folder of images. An image's file is ``file_name`` (COCO) or, when absent, the last part of
  ``coco_url`` (LVIS v1), looked up in the images folder and in its ``<split>/`` sub-folder.
* detector results: a COCO results JSON, a list of ``{"image_id", "category_id", "bbox": [x, y,
  w, h], "score"}``.
* SegInW: ``ROOT/<dataset>/`` per dataset, each holding one instances JSON (searched for as
  ``<dataset>/[valid/]{_annotations_min1cat.coco.json, _annotations.coco.json,
  annotations.json}``) with its images in the same folder as the JSON.
* BSDS500: ``ROOT/images/<split>/*.jpg`` and ``ROOT/groundTruth/<split>/*.mat``.
* DUTS: ``ROOT/DUTS-TE-Image/*.jpg`` and ``ROOT/DUTS-TE-Mask/*.png`` (same stem).
* MVTec-AD: ``ROOT/<category>/test/<defect>/*.png`` and
  ``ROOT/<category>/ground_truth/<defect>/<stem>_mask.png`` (``good`` images have no mask).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..utils import one_line



class DatasetError(ValueError):
    """A dataset is missing, laid out differently from what the task reads, or empty."""


def _require_dir(path: Path, what: str) -> Path:
    if not path.exists():
        raise DatasetError(f"{what} not found: {path}")
    if not path.is_dir():
        raise DatasetError(f"{what} is not a folder: {path}")
    return path


def _require_file(path: Path, what: str) -> Path:
    if not path.exists():
        raise DatasetError(f"{what} not found: {path}")
    if not path.is_file():
        raise DatasetError(f"{what} is not a file: {path}")
    return path


def read_json(path: Path, what: str) -> Any:
    _require_file(path, what)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{what} {path} is not valid JSON ({one_line(e, with_type=True)})") from None


def _limit(items: List[Any], limit: Optional[int]) -> List[Any]:
    return items if limit is None else items[: max(0, int(limit))]


# ------------------------------------------------------------------------------------ COCO / LVIS


@dataclass
class CocoImage:
    id: int
    path: Path
    height: int
    width: int
    anns: List[Dict[str, Any]] = field(default_factory=list)


@dataclass
class CocoDataset:
    """An instances JSON (``data``, ``iscrowd`` filled in where missing) and its images, in the
    JSON's image order (only those kept by ``limit``)."""

    name: str
    ann_file: Path
    data: Dict[str, Any]
    images: List[CocoImage]


def _resolve_image(images_dir: Path, info: Dict[str, Any]) -> Optional[Path]:
    names: List[str] = []
    if info.get("file_name"):
        names.append(str(info["file_name"]))
    url = str(info.get("coco_url") or info.get("flickr_url") or "")
    if url:
        parts = url.rstrip("/").split("/")
        names += ["/".join(parts[-2:]), parts[-1]]
    for n in names:
        for cand in (images_dir / n, images_dir / Path(n).name):
            if cand.is_file():
                return cand
    return None


def load_coco(ann_file: Path, images_dir: Path, limit: Optional[int] = None, name: str = "") -> CocoDataset:
    """Read a COCO or LVIS instances JSON and locate the images it names (the first ``limit``
    images that have at least one annotation, or all)."""
    data = read_json(ann_file, "annotations file")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        raise DatasetError(f"{ann_file} is not a COCO/LVIS instances file: it needs 'images' and 'annotations' lists")
    _require_dir(images_dir, "images folder")
    data.setdefault("categories", [])
    by_image: Dict[int, List[Dict[str, Any]]] = {}
    for i, a in enumerate(data["annotations"]):
        if not isinstance(a, dict) or "image_id" not in a or "segmentation" not in a or "bbox" not in a:
            raise DatasetError(f"{ann_file}: annotation #{i} lacks image_id, bbox or segmentation")
        a.setdefault("iscrowd", 0)  # LVIS has no iscrowd; pycocotools needs it
        a.setdefault("area", float(a["bbox"][2]) * float(a["bbox"][3]))
        by_image.setdefault(int(a["image_id"]), []).append(a)
    images: List[CocoImage] = []
    for info in data["images"]:
        anns = by_image.get(int(info["id"]), [])
        if not anns:
            continue
        if limit is not None and len(images) >= limit:
            break
        path = _resolve_image(images_dir, info)
        if path is None:
            shown = info.get("file_name") or info.get("coco_url") or info["id"]
            raise DatasetError(f"image {shown} of {ann_file.name} not found in {images_dir}")
        images.append(CocoImage(int(info["id"]), path, int(info["height"]), int(info["width"]), anns))
    if not images:
        raise DatasetError(f"{ann_file} has no annotated images to evaluate")
    return CocoDataset(name or ann_file.stem, ann_file, data, images)


def ann_to_mask(ann: Dict[str, Any], height: int, width: int) -> np.ndarray:
    """A COCO/LVIS annotation's segmentation (polygons, uncompressed or compressed RLE) as an
    (H, W) bool mask."""
    from pycocotools import mask as mask_utils

    seg = ann["segmentation"]
    if isinstance(seg, list):
        polys = [p for p in seg if len(p) >= 6]
        if not polys:
            return np.zeros((height, width), dtype=bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):
        rle = mask_utils.frPyObjects(seg, height, width)
    elif isinstance(seg, dict):
        counts = seg["counts"]
        rle = {"size": seg["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    else:
        raise DatasetError(f"annotation {ann.get('id')} has an unreadable segmentation ({type(seg).__name__})")
    return mask_utils.decode(rle).astype(bool)


def default_coco_paths(root: Path, annotations: Optional[Path], images: Optional[Path]) -> Tuple[Path, Path]:
    """``--annotations`` / ``--images``, else the standard places under ROOT:
    annotations/instances_val2017.json (COCO) or lvis_v1_val.json (LVIS), images in val2017/
    (or ROOT itself when it holds no val2017/)."""
    _require_dir(root, "dataset root (--data)")
    if annotations is None:
        cands = [root / "annotations" / "instances_val2017.json", root / "annotations" / "lvis_v1_val.json",
                 root / "lvis_v1_val.json", root / "instances_val2017.json"]
        annotations = next((c for c in cands if c.is_file()), None)
        if annotations is None:
            raise DatasetError(
                f"no instances JSON under {root} (looked for annotations/instances_val2017.json and "
                f"annotations/lvis_v1_val.json); pass --annotations FILE"
            )
    if images is None:
        images = root / "val2017" if (root / "val2017").is_dir() else root
    return annotations, images


def load_detections(path: Path, image_ids: Sequence[int]) -> Dict[int, List[Dict[str, Any]]]:
    """A COCO results JSON of detector boxes, grouped by image id (only ``image_ids``)."""
    dets = read_json(path, "detections file")
    if not isinstance(dets, list):
        raise DatasetError(f"{path} is not a COCO results file: expected a JSON list of detections")
    wanted = set(int(i) for i in image_ids)
    out: Dict[int, List[Dict[str, Any]]] = {i: [] for i in wanted}
    for i, d in enumerate(dets):
        if not isinstance(d, dict) or not {"image_id", "category_id", "bbox", "score"} <= d.keys() or len(d["bbox"]) != 4:
            raise DatasetError(f"{path}: detection #{i} needs image_id, category_id, bbox [x, y, w, h] and score")
        if int(d["image_id"]) in wanted:
            out[int(d["image_id"])].append(d)
    return out


SEGINW_JSON_NAMES = ("_annotations_min1cat.coco.json", "_annotations.coco.json", "annotations.json")


def seginw_datasets(root: Path) -> List[Tuple[str, Path, Path]]:
    """(name, instances JSON, images folder) of each SegInW dataset folder under ROOT."""
    _require_dir(root, "SegInW root (--data)")
    found = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        for sub in (d / "valid", d):
            ann = next((sub / n for n in SEGINW_JSON_NAMES if (sub / n).is_file()), None)
            if ann is not None:
                found.append((d.name, ann, sub))
                break
    if not found:
        raise DatasetError(
            f"no SegInW dataset folders under {root}: expected <dataset>/valid/{SEGINW_JSON_NAMES[0]} "
            f"(or {', '.join(SEGINW_JSON_NAMES[1:])}) with the images beside it"
        )
    return found


# ------------------------------------------------------------------------------------------ BSDS


@dataclass
class Sample:
    """One image of a dense-prediction benchmark: its name, image file and label file (None
    where the image has no label, e.g. a 'good' MVTec image); ``group`` is the MVTec category."""

    name: str
    image: Path
    label: Optional[Path]
    group: str = ""


def _paired(img_dir: Path, label_dir: Path, label_name: str, what: str, limit: Optional[int]) -> List[Sample]:
    """The .jpg images of ``img_dir`` (sorted, first ``limit``), each with its label file
    ``label_dir / label_name.format(stem=...)``, which must exist."""
    images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() == ".jpg")
    if not images:
        raise DatasetError(f"no .jpg images in {img_dir}")
    samples = []
    for p in _limit(images, limit):
        label = label_dir / label_name.format(stem=p.stem)
        if not label.is_file():
            raise DatasetError(f"{what} {label} missing for image {p.name}")
        samples.append(Sample(p.stem, p, label))
    return samples


def bsds_samples(root: Path, split: str = "test", limit: Optional[int] = None) -> List[Sample]:
    _require_dir(root, "BSDS500 root (--data)")
    img_dir = _require_dir(root / "images" / split, f"BSDS500 images/{split} folder")
    gt_dir = _require_dir(root / "groundTruth" / split, f"BSDS500 groundTruth/{split} folder")
    return _paired(img_dir, gt_dir, "{stem}.mat", "ground truth", limit)


def load_bsds_boundaries(mat: Path) -> List[np.ndarray]:
    """The human boundary maps of one BSDS500 ``.mat`` (``groundTruth{i}.Boundaries``), as bool."""
    from scipy.io import loadmat

    try:
        m = loadmat(str(mat))
        cells = m["groundTruth"]
        out = [np.asarray(cells[0, i]["Boundaries"][0, 0]).astype(bool) for i in range(cells.shape[1])]
    except (KeyError, IndexError, ValueError, TypeError, OSError, NotImplementedError) as e:
        raise DatasetError(f"{mat} is not a BSDS500 ground-truth file (groundTruth{{i}}.Boundaries): {type(e).__name__}") from None
    if not out:
        raise DatasetError(f"{mat} holds no ground-truth boundary maps")
    return out


# ------------------------------------------------------------------------------------------ DUTS


def duts_samples(root: Path, limit: Optional[int] = None) -> List[Sample]:
    _require_dir(root, "DUTS root (--data)")
    img_dir = _require_dir(root / "DUTS-TE-Image", "DUTS-TE-Image folder")
    mask_dir = _require_dir(root / "DUTS-TE-Mask", "DUTS-TE-Mask folder")
    return _paired(img_dir, mask_dir, "{stem}.png", "mask", limit)


# ---------------------------------------------------------------------------------------- MVTec


def mvtec_samples(root: Path, categories: Optional[Sequence[str]] = None, limit: Optional[int] = None) -> List[Sample]:
    """Test images of each category (``limit`` per category); ``label`` is None for 'good'."""
    _require_dir(root, "MVTec-AD root (--data)")
    cats = sorted(p.name for p in root.iterdir() if (p / "test").is_dir())
    if categories:
        unknown = [c for c in categories if c not in cats]
        if unknown:
            raise DatasetError(f"MVTec-AD categories not found under {root}: {', '.join(unknown)}")
        cats = list(categories)
    if not cats:
        raise DatasetError(f"no MVTec-AD categories under {root}: expected <category>/test/<defect>/*.png")
    samples: List[Sample] = []
    for c in cats:
        per_cat: List[Sample] = []
        for defect_dir in sorted(p for p in (root / c / "test").iterdir() if p.is_dir()):
            for img in sorted(p for p in defect_dir.iterdir() if p.suffix.lower() == ".png"):
                mask = None
                if defect_dir.name != "good":
                    mask = root / c / "ground_truth" / defect_dir.name / f"{img.stem}_mask.png"
                    if not mask.is_file():
                        raise DatasetError(f"ground-truth mask {mask} missing for {c}/test/{defect_dir.name}/{img.name}")
                per_cat.append(Sample(f"{c}/{defect_dir.name}/{img.stem}", img, mask, group=c))
        if not per_cat:
            raise DatasetError(f"no test images in {root / c / 'test'} (expected <defect>/*.png)")
        samples += _limit(per_cat, limit)
    return samples


def load_binary_mask(path: Optional[Path], shape: Tuple[int, int]) -> np.ndarray:
    """A label PNG as (H, W) bool (> 127 is foreground); all False when ``path`` is None."""
    if path is None:
        return np.zeros(shape, dtype=bool)
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L"))
    except OSError as e:
        raise DatasetError(f"cannot read mask {path}: {e}") from None
    if arr.shape != tuple(shape):
        raise DatasetError(f"mask {path} is {arr.shape[1]}x{arr.shape[0]} but its image is {shape[1]}x{shape[0]}")
    return arr > 127
