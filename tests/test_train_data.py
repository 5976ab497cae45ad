"""finetune's data layouts (repvit_sam.train.data): COCO JSON, SA-1B folder and mask-PNG pairs
read into one form; bad instances and images skipped and counted per reason; preparation split
across ranks and resumable."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from repvit_sam.inference.masks import mask_to_rle
from repvit_sam.parallel import Share, pending, rank_share
from repvit_sam.train.data import DataError, PreparedDataset, prepare, read_entries, summarise


def _image(path, h=40, w=60):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def _rect(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


@pytest.fixture
def coco(tmp_path):
    """Four images: a good one with every kind of bad instance, one missing, one of the wrong
    size, one whose only instance is crowd."""
    images = tmp_path / "images"
    images.mkdir()
    for n in ("a", "c", "d"):
        _image(images / f"{n}.png")
    _image(images / "b_wrong.png", 30, 60)
    (images / "b.png").write_bytes((images / "b_wrong.png").read_bytes())
    good = mask_to_rle(_rect(40, 60, 5, 20, 10, 30))
    anns = [
        {"image_id": 1, "segmentation": good, "bbox": [10, 5, 19, 14], "iscrowd": 0},
        {"image_id": 1, "segmentation": [[10, 10, 20, 10, 20, 20, 10, 20]], "bbox": [10, 10, 10, 10], "iscrowd": 0},  # polygon
        {"image_id": 1, "segmentation": good, "bbox": [10, 5, 19, 14], "iscrowd": 1},  # crowd
        {"image_id": 1, "segmentation": mask_to_rle(np.zeros((40, 60), bool)), "bbox": [0, 0, 0, 0], "iscrowd": 0},  # empty
        {"image_id": 1, "segmentation": mask_to_rle(_rect(40, 60, 0, 2, 0, 2)), "bbox": [0, 0, 1, 1], "iscrowd": 0},  # 4 px
        {"image_id": 1, "segmentation": [[-5, 0, 20, 0, 20, 20]], "bbox": [-5, 0, 25, 20], "iscrowd": 0},  # outside
        {"image_id": 2, "segmentation": good, "bbox": [10, 5, 19, 14], "iscrowd": 0},  # size differs
        {"image_id": 3, "segmentation": good, "bbox": [10, 5, 19, 14], "iscrowd": 0},  # image missing
        {"image_id": 4, "segmentation": good, "bbox": [10, 5, 19, 14], "iscrowd": 1},  # only crowd
    ]
    data = {"images": [{"id": 1, "file_name": "a.png", "height": 40, "width": 60},
                       {"id": 2, "file_name": "b.png", "height": 40, "width": 60},
                       {"id": 3, "file_name": "gone.png", "height": 40, "width": 60},
                       {"id": 4, "file_name": "d.png", "height": 40, "width": 60}],
            "annotations": anns}
    (tmp_path / "ann.json").write_text(json.dumps(data))
    return tmp_path


def test_coco_bad_input_is_skipped_and_counted(coco):
    entries, layout = read_entries(coco / "ann.json", coco / "images")
    assert layout == "coco" and [e.key for e in entries] == ["a", "b", "gone", "d"]
    prep = coco / "prep"
    assert prepare(entries, 64, 16, prep, show_progress=False) == (4, 0)
    s = summarise(entries, prep)
    assert s["images"] == 1 and s["instances"] == 2
    assert s["skipped"] == {"crowd annotation": 2, "empty mask": 1, "below min area": 1, "polygon outside the image": 1,
                            "missing image": 1, "image size differs from the annotation": 1, "no usable instance": 1}
    assert json.loads((prep / "b.json").read_text())["image_size"] == [30, 60]
    # resumable: a second call finds everything done
    assert prepare(entries, 64, 16, prep, show_progress=False) == (0, 4)
    ds = PreparedDataset(prep, ["a"], [(40, 60)], 64, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    x, masks, scale = ds[0]
    assert x.shape == (3, 64, 64) and masks.shape == (2, 64, 64) and scale == pytest.approx(64 / 60)
    assert (x[:, 43:] == 0).all() and not masks[:, 43:].any()  # 40x60 -> 43x64, zero padding below
    assert masks[0].sum() == pytest.approx(15 * 20 * (64 / 60) ** 2, rel=0.15)


def test_sa1b_folder_and_mask_png_pairs(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    _image(images / "sa_1.jpg")
    sa = tmp_path / "sa1b"
    sa.mkdir()
    (sa / "sa_1.json").write_text(json.dumps({
        "image": {"file_name": "sa_1.jpg", "height": 40, "width": 60},
        "annotations": [{"segmentation": mask_to_rle(_rect(40, 60, 5, 20, 10, 30)), "bbox": [10, 5, 19, 14]}]}))
    entries, layout = read_entries(sa, images)
    assert layout == "sa1b" and entries[0].path == images / "sa_1.jpg" and len(entries[0].anns) == 1

    masks = tmp_path / "masks"
    masks.mkdir()
    ids = np.zeros((40, 60), np.uint8)
    ids[5:20, 10:30] = 1
    ids[25:35, 40:55] = 7
    ids[0, 0] = 3  # a 1-pixel instance: below --min-area
    Image.fromarray(ids).save(masks / "sa_1.png")
    entries, layout = read_entries(masks, images)
    assert layout == "png-pairs" and entries[0].mask_png == masks / "sa_1.png"
    prep = tmp_path / "prep"
    prepare(entries, 64, 16, prep, show_progress=False)
    assert summarise(entries, prep) == {"images": 1, "instances": 2, "skipped": {"below min area": 1}}


def test_unreadable_annotations_are_one_line_errors(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read annotations"):
        read_entries(tmp_path / "bad.json", tmp_path)
    (tmp_path / "bad.json").write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match="needs 'images' and 'annotations'"):
        read_entries(tmp_path / "bad.json", tmp_path)
    with pytest.raises(DataError, match="not found"):
        read_entries(tmp_path / "nope", tmp_path)


def test_rank_share_is_disjoint_and_covers_everything(tmp_path, monkeypatch):
    items = list(range(11))
    parts = [rank_share(items, Share(r, 3)) for r in range(3)]
    assert sorted(sum(parts, [])) == items and parts[1] == [1, 4, 7, 10]
    (tmp_path / "4").touch()
    todo, done = pending(items, lambda i: (tmp_path / str(i)).exists(), Share(1, 3))
    assert todo == [1, 7, 10] and done == 1
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="outside WORLD_SIZE"):
        Share.from_env()
