"""Shared by the evaluation tests: tiny datasets written in each benchmark's on-disk format, the
tiny model the CLI is routed to, and helpers to run `repvit-sam eval`.

Model loading: the CLI's ``repvit_sam.cli.load_model`` is replaced (monkeypatch) by one returning
a tiny random-weight RepViT-SAM (tests/conftest.py TINY, 256-pixel input): the official
checkpoints are ~100 MB-2.5 GB and a tiny config has no registry name to detect from a file.
Loading real checkpoints is covered by tests/test_cli.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY, randomize_
from repvit_sam import build_from_config, fuse_model
from repvit_sam.cli import main
from repvit_sam.inference.masks import mask_to_rle

# ------------------------------------------------------------------------------ model + hook


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return fuse_model(randomize_(build_from_config(TINY["repvit"]), seed=3), inplace=True)


class EncoderCounter:
    def __init__(self, model):
        self.calls = 0
        self.handle = model.image_encoder.register_forward_hook(self._hook)

    def _hook(self, *_):
        self.calls += 1


@pytest.fixture
def hooked(tiny, monkeypatch):
    """Route the CLI's model loading to the tiny model; count image-encoder calls."""
    import repvit_sam.cli as cli

    monkeypatch.setattr(cli, "load_model", lambda args: (tiny, "tiny_repvit"))
    counter = EncoderCounter(tiny)
    yield counter
    counter.handle.remove()


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------------ fixtures


def photo(h: int, w: int, seed: int, boxes) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = (rng.random((h, w, 3)) * 40 + 20).astype(np.uint8)
    for (x0, y0, x1, y1), colour in boxes:
        img[y0:y1, x0:x1] = colour
    return img


def rect(h, w, x0, y0, x1, y1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def make_coco(root, lvis=False):
    """COCO layout: ROOT/annotations/instances_val2017.json + ROOT/val2017/*.jpg (LVIS: coco_url
    names the file, no iscrowd). Image 1: two objects (RLE, polygon) and a crowd region;
    image 2: one object (uncompressed RLE); image 3: no annotation."""
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    specs = {
        1: (48, 64, [((5, 6, 25, 30), (220, 40, 40)), ((35, 10, 60, 40), (40, 200, 60))]),
        2: (56, 40, [((8, 12, 32, 44), (230, 230, 30))]),
        3: (40, 40, []),
    }
    images, anns = [], []
    for iid, (h, w, boxes) in specs.items():
        name = f"{iid:012d}.jpg"
        Image.fromarray(photo(h, w, iid, boxes)).save(root / "val2017" / name, quality=95)
        info = {"id": iid, "height": h, "width": w}
        if lvis:
            info["coco_url"] = f"http://images.example.org/val2017/{name}"
        else:
            info["file_name"] = name
        images.append(info)
    a = rect(48, 64, 5, 6, 25, 30)
    anns.append({"id": 1, "image_id": 1, "category_id": 1, "segmentation": mask_to_rle(a), "area": int(a.sum()), "bbox": [5, 6, 20, 24]})
    anns.append({"id": 2, "image_id": 1, "category_id": 2, "segmentation": [[35, 10, 60, 10, 60, 40, 35, 40]], "area": 750.0, "bbox": [35, 10, 25, 30]})
    anns.append({"id": 3, "image_id": 1, "category_id": 1, "segmentation": mask_to_rle(rect(48, 64, 0, 40, 10, 48)), "area": 80, "bbox": [0, 40, 10, 8], "iscrowd": 1})
    c = rect(56, 40, 8, 12, 32, 44)
    flat = c.flatten(order="F").astype(np.int64)
    change = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    anns.append({"id": 4, "image_id": 2, "category_id": 1, "segmentation": {"size": [56, 40], "counts": counts}, "area": int(c.sum()), "bbox": [8, 12, 24, 32]})
    if lvis:
        for x in anns:
            x.pop("iscrowd", None)
        anns = [x for x in anns if x["id"] != 3]
    else:
        for x in anns:
            x.setdefault("iscrowd", 0)
    data = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    name = "lvis_v1_val.json" if lvis else "instances_val2017.json"
    (root / "annotations" / name).write_text(json.dumps(data))
    return data


def make_detections(path, data, extra=True):
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9 - 0.1 * i}
            for i, a in enumerate(data["annotations"]) if not a.get("iscrowd")]
    if extra:
        dets.append({"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.3})
        dets.append({"image_id": 999, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.3})  # not in the JSON: ignored
    path.write_text(json.dumps(dets))
    return dets


def make_bsds(root, split="test", n=2):
    from scipy.io import savemat

    (root / "images" / split).mkdir(parents=True)
    (root / "groundTruth" / split).mkdir(parents=True)
    for i in range(n):
        h, w = 40, 56
        img = photo(h, w, 10 + i, [((10, 8, 40, 30), (200, 200, 200))])
        Image.fromarray(img).save(root / "images" / split / f"{100 + i}.jpg", quality=95)
        seg = np.ones((h, w), np.uint16)
        seg[8:30, 10:40] = 2
        bnd = np.zeros((h, w), np.uint8)
        bnd[8, 10:40] = bnd[29, 10:40] = 1
        bnd[8:30, 10] = bnd[8:30, 39] = 1
        cell = np.empty((1, 2), dtype=object)
        cell[0, 0] = {"Segmentation": seg, "Boundaries": bnd}
        cell[0, 1] = {"Segmentation": seg, "Boundaries": np.roll(bnd, 1, axis=1)}
        savemat(root / "groundTruth" / split / f"{100 + i}.mat", {"groundTruth": cell})


def make_duts(root, n=2):
    (root / "DUTS-TE-Image").mkdir(parents=True)
    (root / "DUTS-TE-Mask").mkdir(parents=True)
    for i in range(n):
        img = photo(48, 48, 20 + i, [((14, 12, 34, 36), (240, 60, 60))])
        Image.fromarray(img).save(root / "DUTS-TE-Image" / f"ILSVRC_{i}.jpg", quality=95)
        Image.fromarray(rect(48, 48, 14, 12, 34, 36).astype(np.uint8) * 255).save(root / "DUTS-TE-Mask" / f"ILSVRC_{i}.png")


def make_mvtec(root, cats=("bottle", "grid")):
    for c in cats:
        for defect in ("good", "broken"):
            (root / c / "test" / defect).mkdir(parents=True)
        (root / c / "ground_truth" / "broken").mkdir(parents=True)
        Image.fromarray(photo(40, 40, 30, [((5, 5, 35, 35), (120, 120, 120))])).save(root / c / "test" / "good" / "000.png")
        Image.fromarray(photo(40, 40, 31, [((5, 5, 35, 35), (120, 120, 120)), ((15, 15, 20, 22), (10, 10, 10))])).save(root / c / "test" / "broken" / "000.png")
        Image.fromarray(rect(40, 40, 15, 15, 20, 22).astype(np.uint8) * 255).save(root / c / "ground_truth" / "broken" / "000_mask.png")


def results(out):
    return json.loads((out / "results.json").read_text())


def run_ok(capsys, task, root, out, *extra):
    """Run ``eval TASK`` without cache or progress bars; assert success; (results.json, stdout)."""
    code, stdout, err = run(["eval", task, "--data", root, *extra, "--no-cache", "--no-progress", "--out", out], capsys)
    assert code == 0, err
    return results(out), stdout


# ------------------------------------------------------------------------------ coco-prompt


def prep_broken(tmp_path, case):
    """Build a dataset with one defect; return the CLI args."""
    d = tmp_path / case
    if case == "missing-root":
        return ["coco-prompt", "--data", d]
    if case == "no-annotations":
        d.mkdir()
        return ["coco-prompt", "--data", d]
    if case == "bad-json":
        make_coco(d)
        (d / "annotations" / "instances_val2017.json").write_text("{not json")
        return ["coco-prompt", "--data", d]
    if case == "not-instances":
        make_coco(d)
        (d / "annotations" / "instances_val2017.json").write_text(json.dumps({"images": []}))
        return ["coco-prompt", "--data", d]
    if case == "missing-image":
        make_coco(d)
        (d / "val2017" / "000000000002.jpg").unlink()
        return ["coco-prompt", "--data", d]
    if case == "no-annotated-images":
        make_coco(d)
        p = d / "annotations" / "instances_val2017.json"
        data = json.loads(p.read_text())
        data["annotations"] = []
        p.write_text(json.dumps(data))
        return ["coco-prompt", "--data", d]
    if case == "bad-detections":
        data = make_coco(d)
        (tmp_path / "dets.json").write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 1, 1]}]))
        return ["coco-ap", "--data", d, "--detections", tmp_path / "dets.json"]
    if case == "missing-detections":
        make_coco(d)
        return ["coco-ap", "--data", d, "--detections", tmp_path / "nope.json"]
    if case == "seginw-empty":
        d.mkdir()
        (tmp_path / "dets").mkdir()
        return ["coco-ap", "--seginw", "--data", d, "--detections", tmp_path / "dets"]
    if case == "bsds-no-gt":
        make_bsds(d)
        import shutil

        shutil.rmtree(d / "groundTruth")
        return ["bsds-edge", "--data", d]
    if case == "bsds-missing-mat":
        make_bsds(d)
        (d / "groundTruth" / "test" / "101.mat").unlink()
        return ["bsds-edge", "--data", d]
    if case == "bsds-bad-mat":
        make_bsds(d)
        from scipy.io import savemat

        savemat(d / "groundTruth" / "test" / "100.mat", {"something": np.zeros(3)})
        return ["bsds-edge", "--data", d, "--limit", "1"]
    if case == "duts-empty":
        (d / "DUTS-TE-Image").mkdir(parents=True)
        (d / "DUTS-TE-Mask").mkdir()
        return ["duts-sod", "--data", d]
    if case == "duts-missing-mask":
        make_duts(d)
        (d / "DUTS-TE-Mask" / "ILSVRC_1.png").unlink()
        return ["duts-sod", "--data", d]
    if case == "mvtec-missing-mask":
        make_mvtec(d, cats=("bottle",))
        (d / "bottle" / "ground_truth" / "broken" / "000_mask.png").unlink()
        return ["mvtec-ad", "--data", d]
    if case == "mvtec-unknown-category":
        make_mvtec(d, cats=("bottle",))
        return ["mvtec-ad", "--data", d, "--categories", "bottle,carpet"]
    if case == "mvtec-wrong-layout":
        (d / "bottle" / "train").mkdir(parents=True)
        return ["mvtec-ad", "--data", d]
    raise AssertionError(case)


BROKEN = {
    "missing-root": "dataset root (--data) not found",
    "no-annotations": "no instances JSON under",
    "bad-json": "is not valid JSON",
    "not-instances": "needs 'images' and 'annotations' lists",
    "missing-image": "image 000000000002.jpg of instances_val2017.json not found in",
    "no-annotated-images": "has no annotated images to evaluate",
    "bad-detections": "detection #0 needs image_id, category_id, bbox",
    "missing-detections": "--detections: not found",
    "seginw-empty": "no SegInW dataset folders under",
    "bsds-no-gt": "BSDS500 groundTruth/test folder not found",
    "bsds-missing-mat": "101.mat missing for image 101.jpg",
    "bsds-bad-mat": "is not a BSDS500 ground-truth file",
    "duts-empty": "no .jpg images in",
    "duts-missing-mask": "ILSVRC_1.png missing for image ILSVRC_1.jpg",
    "mvtec-missing-mask": "ground-truth mask",
    "mvtec-unknown-category": "categories not found under",
    "mvtec-wrong-layout": "no MVTec-AD categories under",
}
