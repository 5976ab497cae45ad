"""The synthetic world: determinism, exact visible masks, and the written layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from repvit_sam.synthetic import (
    KINDS, SPREAD_THRESHOLD, box_xywh, davis_palette, make_scene, make_video, scene_rng, write_images, write_video,
)
from conftest import run_cli


def _hue(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 -> (N,) hue in [0, 1) (HSV)."""
    c = rgb.astype(np.float64)
    mx, mn = c.max(1), c.min(1)
    d = np.where(mx > mn, mx - mn, 1.0)
    r, g, b = c.T
    h = np.where(mx == r, ((g - b) / d) % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4))
    return (h / 6.0) % 1.0


def _hue_dist(a, b):
    d = np.abs(np.asarray(a) - np.asarray(b)) % 1.0
    return np.minimum(d, 1.0 - d)


def _files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def scenes():
    return [make_scene(scene_rng(7, i, "images")) for i in range(24)]


@pytest.fixture(scope="module")
def image_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "img"
    write_images(out, 4, seed=3, quiet=True)
    return out


@pytest.fixture(scope="module")
def video_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "vid"
    write_video(out, 2, seed=5, size=(160, 120), num_frames=12, num_objects=3, reenter=True, quiet=True)
    return out


# ------------------------------------------------------------------------------- scenes
def test_scene_arrays_are_deterministic_and_seed_dependent():
    a, b = make_scene(np.random.default_rng(11)), make_scene(np.random.default_rng(11))
    c = make_scene(np.random.default_rng(12))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.id_map, b.id_map) and a.categories == b.categories
    assert not np.array_equal(a.image, c.image)


def test_masks_are_the_visible_disjoint_pixels(scenes):
    for s in scenes:
        k = len(s.categories)
        assert s.image.shape == (256, 256, 3) and s.image.dtype == np.uint8
        assert s.masks.shape == (k, 256, 256) and s.colors.shape == (k, 3)
        assert (s.masks.sum(0) <= 1).all()  # disjoint
        for i in range(k):
            assert np.array_equal(s.masks[i], s.id_map == i + 1)
            assert s.masks[i].sum() >= 0.5 * s.full_areas[i] > 0  # mostly visible
        assert set(s.categories) <= set(KINDS)


def test_annotated_pixels_are_exactly_the_colourful_ones(scenes):
    # Objects are saturated, backgrounds and clutter nearly grey: the channel spread tells them
    # apart at every pixel, so no unannotated pixel looks like an object.
    for s in scenes:
        spread = s.image.max(2).astype(int) - s.image.min(2)
        assert np.array_equal(spread >= SPREAD_THRESHOLD, s.id_map > 0)


def test_each_instance_keeps_its_own_hue(scenes):
    for s in scenes:
        hues = _hue(s.colors)
        for i, mask in enumerate(s.masks):
            assert _hue_dist(_hue(s.image[mask]), hues[i]).max() < 0.03
        for i in range(len(hues)):
            for j in range(i):
                assert _hue_dist(hues[i], hues[j]) > 0.05  # neighbours never share a colour


def test_sizes_span_small_to_large(scenes):
    areas = np.array([m.sum() for s in scenes for m in s.masks])
    assert (areas < 32 * 32).sum() >= 3
    assert (areas >= 256 * 256 / 4).sum() >= 1
    kinds = {c for s in scenes for c in s.categories}
    assert kinds == set(KINDS)
    counts = [len(s.categories) for s in scenes]
    assert min(counts) >= 3 and max(counts) >= 6


def test_box_convention_is_segment_anythings():
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True  # rows 2..4, cols 3..8
    assert box_xywh(m) == [3, 2, 5, 2]
    assert box_xywh(np.zeros((4, 4), bool)) == [0, 0, 0, 0]


# ------------------------------------------------------------------------------- image files
def test_image_set_is_byte_identical_for_a_seed(image_set, tmp_path):
    again = tmp_path / "again"
    write_images(again, 4, seed=3, quiet=True)
    assert _files(again) == _files(image_set)
    other = tmp_path / "other"
    write_images(other, 2, seed=4, quiet=True)
    assert (other / "images/000000.png").read_bytes() != (image_set / "images/000000.png").read_bytes()
    # item i depends on (seed, i) only: a smaller set is a prefix
    assert (tmp_path / "again/images/000001.png").read_bytes() == (image_set / "images/000001.png").read_bytes()


def test_worker_processes_write_the_same_files(image_set, tmp_path, capsys):
    """Scenes rendered in 2 processes (`synth images --workers 2`) give byte-identical files,
    annotation ids included."""
    code, _, err = run_cli(["synth", "images", "-o", tmp_path / "par", "--count", 4, "--seed", 3, "--workers", 2, "--quiet"], capsys)
    assert code == 0, err
    assert _files(tmp_path / "par") == _files(image_set)


def test_coco_json_reads_with_pycocotools(image_set):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    coco = COCO(str(image_set / "annotations.json"))
    assert sorted(coco.getImgIds()) == [1, 2, 3, 4]
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(KINDS)
    for img in coco.loadImgs(coco.getImgIds()):
        rgb = np.asarray(Image.open(image_set / "images" / img["file_name"]))
        assert rgb.shape == (img["height"], img["width"], 3)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        union = np.zeros(rgb.shape[:2], int)
        for a in anns:
            m = coco.annToMask(a).astype(bool)
            union += m
            assert a["iscrowd"] == 0 and a["area"] == m.sum() > 0
            x, y, w, h = mask_utils.toBbox(a["segmentation"])  # covered extent
            assert a["bbox"] == [int(x), int(y), int(w) - 1, int(h) - 1]
        assert union.max() == 1
        spread = rgb.max(2).astype(int) - rgb.min(2)
        assert np.array_equal(spread >= SPREAD_THRESHOLD, union > 0)  # PNG is lossless: still exact


def test_sa1b_json_per_image(image_set):
    from repvit_sam.inference.masks import rle_to_mask

    coco = json.loads((image_set / "annotations.json").read_text())
    for img in coco["images"]:
        rec = json.loads((image_set / "sa1b" / (Path(img["file_name"]).stem + ".json")).read_text())
        assert rec["image"]["file_name"] == img["file_name"] and rec["image"]["width"] == 256
        theirs = [a for a in coco["annotations"] if a["image_id"] == img["id"]]
        assert len(rec["annotations"]) == len(theirs)
        for a, b in zip(rec["annotations"], theirs):
            m = rle_to_mask(a["segmentation"])
            assert a["segmentation"] == b["segmentation"] and a["area"] == m.sum() and a["bbox"] == b["bbox"]
            (px, py), = a["point_coords"]
            assert m[int(py), int(px)]
            assert a["crop_box"] == [0, 0, 256, 256] and a["predicted_iou"] == 1.0
    assert Image.open(image_set / "preview.png").size[0] > 256 * 3


# ------------------------------------------------------------------------------------ video
def test_video_leaves_and_reenters():
    v = make_video(np.random.default_rng(2), 120, 160, num_frames=16, num_objects=2, reenter=True)
    assert v.frames.shape == (16, 120, 160, 3) and v.id_maps.shape == (16, 120, 160)
    present = (v.id_maps == 1).any(axis=(1, 2))
    gone = np.flatnonzero(~present)
    assert present[0] and gone.size and present[gone[-1] + 1 :].any()
    assert (v.full_areas[gone, 0] == 0).all()  # absent because off-screen, not hidden
    assert 1 in v.reentering
    for k in (1, 2):
        assert (v.id_maps[0] == k).sum() > 40  # every object shows in the DAVIS reference frame
    spread = v.frames.max(3).astype(int) - v.frames.min(3)
    assert np.array_equal(spread >= SPREAD_THRESHOLD, v.id_maps > 0)


def test_video_objects_move_and_occlude():
    occluded = moved = 0
    for i in range(4):
        v = make_video(scene_rng(1, i, "video"), 120, 160, num_frames=12, num_objects=3, reenter=False)
        visible = np.stack([(v.id_maps == k).sum(axis=(1, 2)) for k in (1, 2, 3)], axis=1)  # (T, K)
        assert v.full_areas.shape == (12, 3) and (visible <= v.full_areas).all()
        occluded += int((visible < 0.9 * v.full_areas).any())
        for k in (1, 2, 3):
            ys, xs = np.nonzero(v.id_maps[0] == k)
            ye, xe = np.nonzero(v.id_maps[-1] == k)
            if ys.size and ye.size and np.hypot(ys.mean() - ye.mean(), xs.mean() - xe.mean()) > 5:
                moved += 1
    assert moved >= 6 and occluded >= 2


def test_davis_layout(video_set):
    seqs = (video_set / "ImageSets/2017/val.txt").read_text().split()
    assert seqs == ["seq0000", "seq0001"]
    pal = davis_palette()
    assert pal[3:15] == [128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128]  # DAVIS object colours 1-4
    for seq in seqs:
        jpgs = sorted((video_set / "JPEGImages/480p" / seq).glob("*.jpg"))
        pngs = sorted((video_set / "Annotations/480p" / seq).glob("*.png"))
        assert [p.stem for p in jpgs] == [p.stem for p in pngs] == [f"{t:05d}" for t in range(12)]
        first = Image.open(pngs[0])
        assert first.mode == "P" and first.getpalette()[:12] == pal[:12]
        assert set(np.unique(np.asarray(first))) == {0, 1, 2, 3}
        ids = np.stack([np.asarray(Image.open(p)) for p in pngs])
        present = (ids == 1).any(axis=(1, 2))
        assert present[0] and not present.all() and present[np.flatnonzero(~present)[-1] + 1 :].any()
        assert Image.open(jpgs[0]).size == (160, 120)


def test_vis_json_matches_davis_pngs(video_set):
    from repvit_sam.inference.masks import rle_to_mask

    vis = json.loads((video_set / "vis_instances.json").read_text())
    assert [v["name"] for v in vis["videos"]] == ["seq0000", "seq0001"]
    for a in vis["annotations"]:
        video = vis["videos"][a["video_id"] - 1]
        assert len(a["segmentations"]) == len(a["areas"]) == len(a["bboxes"]) == video["length"] == 12
        for t, (seg, area, box) in enumerate(zip(a["segmentations"], a["areas"], a["bboxes"])):
            ids = np.asarray(Image.open(video_set / "Annotations/480p" / video["name"] / f"{t:05d}.png"))
            truth = ids == a["object_id"]
            if seg is None:
                assert not truth.any() and area is None and box is None
            else:
                assert np.array_equal(rle_to_mask(seg), truth) and area == truth.sum() and box == box_xywh(truth)
        assert (video_set / "JPEGImages/480p" / video["file_names"][0]).is_file()
    assert any(s is None for a in vis["annotations"] for s in a["segmentations"])  # object 1 leaves


def test_video_set_is_byte_identical(video_set, tmp_path):
    write_video(tmp_path, 2, seed=5, size=(160, 120), num_frames=12, num_objects=3, reenter=True, quiet=True)
    assert _files(tmp_path) == _files(video_set)


# -------------------------------------------------------------------------------------- CLI
def test_cli_images_and_rerun(tmp_path, capsys):
    out = tmp_path / "set"
    code, stdout, _ = run_cli(["synth", "images", "-o", out, "--count", 2, "--seed", 1, "--size", "128x96", "--quiet"], capsys)
    assert code == 0 and "2 images" in stdout
    assert Image.open(out / "images/000001.png").size == (128, 96)
    code, _, _ = run_cli(["synth", "images", "-o", out, "--count", 1, "--seed", 1, "--size", "128x96", "--quiet"], capsys)
    assert code == 0 and not (out / "images/000001.png").exists()  # the old set was replaced
    assert len(json.loads((out / "annotations.json").read_text())["images"]) == 1


@pytest.mark.parametrize("argv, message", [
    (["--size", "12x12"], "--size sides must be 64..4096"),
    (["--size", "big"], "--size must be WIDTHxHEIGHT"),
    (["--count", "0"], "--count must be >= 1"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--objects", "5-2"], "--objects needs 1 <= MIN <= MAX"),
    (["--frames", "20"], "apply to 'synth video' only"),
    (["--workers", "0"], "--workers must be >= 1"),
])
def test_cli_usage_errors_are_one_line(tmp_path, capsys, argv, message):
    code, _, err = run_cli(["synth", "images", "-o", tmp_path / "x", *argv], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_cli_refuses_a_foreign_folder(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = run_cli(["synth", "images", "-o", tmp_path, "--count", 1], capsys)
    assert code == 2 and "not empty" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_cli_refuses_a_set_of_the_other_kind(image_set, capsys):
    code, _, err = run_cli(["synth", "video", "-o", image_set, "--count", 1], capsys)
    assert code == 2 and "synthetic 'images' set" in err
