"""Instance-mask data for ``finetune``: three annotation layouts read into one form, prepared
once into the model's input frame, then served to :class:`~.objectives.PromptLoop`.

Layouts (``--data`` / ``--images``):

* **COCO instances JSON** (a ``.json`` file): polygons, uncompressed or compressed RLE; image
  files named by ``file_name`` under ``--images``.
* **SA-1B folder** (a folder of ``*.json``, one per image): ``image`` {``file_name``, ``height``,
  ``width``} and ``annotations`` with RLE ``segmentation``; images under ``--images`` (default:
  the JSON's folder).
* **Image + mask PNG pairs** (a folder of ``*.png`` masks): ``NAME.png`` under ``--data`` holds
  instance ids (0 = background, each other value one instance; grayscale or palette) for the
  image ``NAME.*`` under ``--images``.

Bad input is skipped and counted per reason (:data:`SKIP_REASONS`), never fatal: crowd
annotations, empty masks, masks below ``min_area`` pixels, polygons with a vertex outside the
image, missing images, images whose size differs from the annotation's.

Preparation (:func:`prepare`) writes ``PREP/KEY.npz`` (the image resized so its long side is
the model's input size, uint8, and its instance masks resized the same way, bit-packed) and
``PREP/KEY.json`` (what was kept and skipped) per image. Images are split across ranks with
:mod:`repvit_sam.parallel`; an image whose ``.json`` exists is done, so a re-run resumes.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..utils import atomic_write, write_json_atomic

SKIP_REASONS = (
    "crowd annotation", "empty mask", "below min area", "polygon outside the image",
    "missing image", "image size differs from the annotation", "no usable instance",
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class DataError(RuntimeError):
    """Annotations that cannot be read at all (one line: what is wrong, what to do)."""


@dataclass
class ImageEntry:
    """One annotated image. ``anns``: COCO-style dicts (``segmentation``, ``iscrowd``, ``id``);
    ``mask_png``: the instance-id PNG of the PNG-pairs layout (then ``anns`` is empty)."""

    key: str
    path: Optional[Path]
    height: int
    width: int
    anns: List[Dict[str, Any]] = field(default_factory=list)
    mask_png: Optional[Path] = None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"cannot read annotations {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None


def _find_image(images: Path, name: str) -> Optional[Path]:
    for cand in (images / name, images / Path(name).name):
        if cand.is_file():
            return cand
    return None


def read_entries(data: Path, images: Optional[Path]) -> Tuple[List[ImageEntry], str]:
    """Every annotated image of ``data`` in a stable order, and the layout's name."""
    data = Path(data)
    if not data.exists():
        raise DataError(f"--data not found: {data}")
    if data.is_file():
        return _read_coco(data, images), "coco"
    jsons = sorted(data.glob("*.json"))
    if jsons:
        return _read_sa1b(jsons, images or data), "sa1b"
    pngs = sorted(data.glob("*.png"))
    if pngs:
        if images is None:
            raise DataError(f"--data {data} holds mask PNGs: pass --images with the images they belong to")
        return _read_pairs(pngs, images), "png-pairs"
    raise DataError(f"--data {data}: expected a COCO instances JSON, a folder of SA-1B JSONs, or a folder of mask PNGs")


def _read_coco(path: Path, images: Optional[Path]) -> List[ImageEntry]:
    d = _read_json(path)
    if not isinstance(d, dict) or not isinstance(d.get("images"), list) or not isinstance(d.get("annotations"), list):
        raise DataError(f"{path} is not a COCO instances file: it needs 'images' and 'annotations' lists")
    images = images or path.parent
    by_image: Dict[int, List[Dict[str, Any]]] = {}
    for i, a in enumerate(d["annotations"]):
        if not isinstance(a, dict) or "image_id" not in a or "segmentation" not in a:
            raise DataError(f"{path}: annotation #{i} lacks image_id or segmentation")
        by_image.setdefault(int(a["image_id"]), []).append(a)
    out = []
    for info in d["images"]:
        anns = by_image.get(int(info["id"]), [])
        if not anns:
            continue
        name = str(info.get("file_name", ""))
        out.append(ImageEntry(Path(name).with_suffix("").as_posix() or str(info["id"]), _find_image(images, name) if name else None,
                              int(info["height"]), int(info["width"]), anns))
    if not out:
        raise DataError(f"{path} has no annotated images")
    return out


def _read_sa1b(jsons: List[Path], images: Path) -> List[ImageEntry]:
    out = []
    for j in jsons:
        d = _read_json(j)
        if not isinstance(d, dict) or not isinstance(d.get("image"), dict) or not isinstance(d.get("annotations"), list):
            raise DataError(f"{j} is not an SA-1B annotation file: it needs 'image' and 'annotations'")
        info = d["image"]
        name = str(info.get("file_name") or j.stem)
        path = _find_image(images, name) or next((p for p in (j.with_suffix(s) for s in IMAGE_SUFFIXES) if p.is_file()), None)
        out.append(ImageEntry(j.stem, path, int(info["height"]), int(info["width"]), list(d["annotations"])))
    return out


def _read_pairs(pngs: List[Path], images: Path) -> List[ImageEntry]:
    from PIL import Image

    out = []
    for m in pngs:
        path = next((p for p in (images / (m.stem + s) for s in IMAGE_SUFFIXES) if p.is_file()), None)
        with Image.open(m) as im:
            w, h = im.size
        out.append(ImageEntry(m.stem, path, h, w, [], mask_png=m))
    return out


# ------------------------------------------------------------------ decoding and checks
def _polygon_outside(seg: Any, height: int, width: int) -> bool:
    if not isinstance(seg, list):
        return False
    for poly in seg:
        xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        if len(xy) and ((xy[:, 0] < 0) | (xy[:, 0] > width) | (xy[:, 1] < 0) | (xy[:, 1] > height)).any():
            return True
    return False


def decode_entry(entry: ImageEntry, min_area: int) -> Tuple[List[np.ndarray], Counter]:
    """The usable instance masks ((H, W) bool each, at the annotation's size) and the skip
    counts of the rest."""
    skips: Counter = Counter()
    masks: List[np.ndarray] = []
    if entry.mask_png is not None:
        from PIL import Image

        with Image.open(entry.mask_png) as im:
            ids = np.asarray(im if im.mode in ("P", "L", "I", "I;16") else im.convert("L"))
        cands = [ids == v for v in np.unique(ids) if v != 0]
    else:
        from ..evaluation.datasets import ann_to_mask

        cands = []
        for a in entry.anns:
            if a.get("iscrowd"):
                skips["crowd annotation"] += 1
                continue
            if _polygon_outside(a["segmentation"], entry.height, entry.width):
                skips["polygon outside the image"] += 1
                continue
            try:
                cands.append(ann_to_mask(a, entry.height, entry.width))
            except Exception:  # an unreadable segmentation is an empty one
                skips["empty mask"] += 1
    for m in cands:
        area = int(m.sum())
        if area == 0:
            skips["empty mask"] += 1
        elif area < min_area:
            skips["below min area"] += 1
        else:
            masks.append(m)
    return masks, skips


def _resize_masks(masks: List[np.ndarray], size: Tuple[int, int]) -> np.ndarray:
    """(n, H, W) bool -> (n, h, w) bool, bilinear then > 0.5 (nearest when sizes agree)."""
    arr = np.stack(masks)
    if arr.shape[1:] == tuple(size):
        return arr
    t = torch.from_numpy(arr).float()[:, None]
    return (torch.nn.functional.interpolate(t, size, mode="bilinear", align_corners=False)[:, 0] > 0.5).numpy()


def prepare_one(entry: ImageEntry, img_size: int, min_area: int, out: Path) -> Dict[str, Any]:
    """Prepare one image (see the module doc); returns its record (also written as JSON)."""
    from ..inference.transforms import ResizeLongestSide
    from ..io import ImageError, load_image

    record: Dict[str, Any] = {"key": entry.key, "file": str(entry.path) if entry.path else None,
                              "height": entry.height, "width": entry.width, "instances": 0, "skipped": {}}
    skips: Counter = Counter()
    image = None
    if entry.path is None or not Path(entry.path).is_file():
        skips["missing image"] += 1
    else:
        try:
            image = load_image(entry.path)
        except (ImageError, OSError):
            skips["missing image"] += 1
    if image is not None and image.shape[:2] != (entry.height, entry.width):
        skips["image size differs from the annotation"] += 1
        record["image_size"] = [int(image.shape[0]), int(image.shape[1])]
        image = None
    if image is not None:
        masks, inst_skips = decode_entry(entry, min_area)
        skips.update(inst_skips)
        if not masks:
            skips["no usable instance"] += 1
        else:
            resized = ResizeLongestSide(img_size).apply_image(np.ascontiguousarray(image))
            small = _resize_masks(masks, resized.shape[:2])
            keep = small.reshape(len(small), -1).any(1)  # a mask can vanish when shrunk
            if not keep.all():
                skips["below min area"] += int((~keep).sum())
            if keep.any():
                with atomic_write(out / f"{entry.key}.npz") as f:
                    np.savez_compressed(f, image=resized, masks=np.packbits(small[keep], axis=-1),
                                        width=np.int64(small.shape[2]), areas=np.array([int(m.sum()) for m, k in zip(masks, keep) if k]))
                record["instances"] = int(keep.sum())
            else:
                skips["no usable instance"] += 1
    record["skipped"] = dict(skips)
    write_json_atomic(out / f"{entry.key}.json", record)
    return record


def prepare(entries: List[ImageEntry], img_size: int, min_area: int, out: Path, show_progress: bool = True) -> Tuple[int, int]:
    """Prepare this rank's share of ``entries`` into ``out`` (resumable); returns (prepared now,
    already done)."""
    from tqdm.auto import tqdm

    from ..parallel import pending

    out.mkdir(parents=True, exist_ok=True)
    for e in entries:
        if "/" in e.key:
            (out / e.key).parent.mkdir(parents=True, exist_ok=True)
    todo, done = pending(entries, lambda e: (out / f"{e.key}.json").is_file())
    for e in tqdm(todo, desc="prepare", unit="img", disable=not show_progress or not todo):
        prepare_one(e, img_size, min_area, out)
    return len(todo), done


def summarise(entries: List[ImageEntry], out: Path) -> Dict[str, Any]:
    """Totals over every prepared image: images / instances kept and skips per reason."""
    skips: Counter = Counter()
    images = instances = 0
    for e in entries:
        rec = json.loads((out / f"{e.key}.json").read_text(encoding="utf-8"))
        skips.update(rec["skipped"])
        if rec["instances"]:
            images += 1
            instances += rec["instances"]
    return {"images": images, "instances": instances, "skipped": {k: skips[k] for k in SKIP_REASONS if skips[k]}}


class PreparedDataset(torch.utils.data.Dataset):
    """Prepared images as (image (3, S, S) normalised and zero-padded, masks (n, S, S) bool on
    the same padded square, scale = input pixels per original pixel)."""

    def __init__(self, out: Path, keys: List[str], sizes: List[Tuple[int, int]], img_size: int,
                 pixel_mean, pixel_std) -> None:
        self.out, self.keys, self.sizes, self.s = Path(out), list(keys), list(sizes), int(img_size)
        self.mean = torch.tensor(pixel_mean).view(3, 1, 1)
        self.std = torch.tensor(pixel_std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int):
        with np.load(self.out / f"{self.keys[i]}.npz", allow_pickle=False) as z:
            image, packed, width = z["image"], z["masks"], int(z["width"])
        h, w = image.shape[:2]
        masks = np.unpackbits(packed, axis=-1, count=width).astype(bool)
        x = (torch.from_numpy(image).permute(2, 0, 1).float() - self.mean) / self.std
        x = torch.nn.functional.pad(x, (0, self.s - w, 0, self.s - h))
        m = torch.zeros((len(masks), self.s, self.s), dtype=torch.bool)
        m[:, :h, :w] = torch.from_numpy(masks)
        H, W = self.sizes[i]
        return x, m, self.s / max(H, W)
