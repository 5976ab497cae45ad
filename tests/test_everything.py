"""`repvit-sam everything`: folders, SA-1B JSON, overlays, per-mask PNGs, skip / fail / resume."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from repvit_sam.everything import collect_jobs
from repvit_sam.inference.masks import rle_to_mask

from conftest import run_cli as run

FAST = ["--points-per-side", "3", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


@pytest.fixture
def ckpt(vit_t_checkpoint):
    return vit_t_checkpoint


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "images"
    (d / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(d / "a.png")
    Image.fromarray(rng.integers(0, 256, (50, 40), dtype=np.uint8)).save(d / "b.jpg")  # grayscale
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (d / "notes.txt").write_text("not an image")
    Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(d / "sub" / "c.png")
    return d


@pytest.fixture
def tiny(monkeypatch):
    """The CLI's model loader returns a tiny random model (the loader itself is tested in
    test_single_files_overwrite_and_all_good and test_cli)."""
    from repvit_sam import build_from_config, cli

    from conftest import TINY, randomize_

    torch.manual_seed(0)
    model = randomize_(build_from_config(TINY["repvit"]))
    monkeypatch.setattr(cli, "load_model", lambda args: (model, "tiny_repvit"))
    return model


def test_folder_end_to_end_skip_and_resume(tmp_path, folder, tiny, capsys):
    ckpt = "unused"
    out = tmp_path / "out"
    code, stdout, err = run(["everything", folder, "-o", out, "--masks", "--checkpoint", ckpt, *FAST], capsys)
    assert code == 1  # one image failed
    assert "done 2, skipped 0, failed 1" in stdout
    assert "broken.png" in err
    assert not (out / "sub").exists()  # not recursive
    for stem, (h, w) in (("a", (60, 80)), ("b", (50, 40))):
        ann = json.loads((out / f"{stem}.json").read_text())
        assert ann["image"] == {"image_id": ann["image"]["image_id"], "width": w, "height": h, "file_name": f"{stem}{'.png' if stem == 'a' else '.jpg'}"}
        assert len(ann["annotations"]) > 0
        for i, a in enumerate(ann["annotations"]):
            assert set(a) == {"id", "segmentation", "bbox", "area", "predicted_iou", "point_coords", "stability_score", "crop_box"}
            assert a["id"] == i and isinstance(a["segmentation"]["counts"], str)
            mask = rle_to_mask(a["segmentation"])
            assert mask.shape == (h, w) and a["area"] == int(mask.sum())
            png = np.array(Image.open(out / f"{stem}_masks" / f"{i:04d}.png")) > 0
            np.testing.assert_array_equal(png, mask)
            assert a["crop_box"] == [0.0, 0.0, float(w), float(h)]
        assert Image.open(out / f"{stem}_overlay.png").size == (w, h)

    # a second run skips what is done, retries the broken image, rewrites nothing
    before = {p: os.stat(p).st_mtime_ns for p in out.rglob("*")}
    code, stdout, _ = run(["everything", folder, "-o", out, "--checkpoint", ckpt, *FAST], capsys)
    assert code == 1 and "done 0, skipped 2, failed 1" in stdout
    assert {p: os.stat(p).st_mtime_ns for p in out.rglob("*")} == before

    # -r adds the sub-folder image (outputs mirror the layout); the others are still skipped
    code, stdout, _ = run(["everything", folder, "-r", "-o", out, "--checkpoint", ckpt, *FAST], capsys)
    assert "done 1, skipped 2, failed 1" in stdout
    assert json.loads((out / "sub" / "c.json").read_text())["image"]["width"] == 30


def test_single_files_overwrite_and_all_good(tmp_path, folder, ckpt, capsys):
    out = tmp_path / "out"
    code, stdout, _ = run(["everything", folder / "a.png", "-o", out, "--checkpoint", ckpt, *FAST], capsys)
    assert code == 0 and "done 1, skipped 0, failed 0" in stdout
    first = (out / "a.json").read_text()
    code, stdout, _ = run(["everything", folder / "a.png", "-o", out, "--overwrite", "--checkpoint", ckpt, *FAST], capsys)
    assert code == 0 and "done 1, skipped 0, failed 0" in stdout
    assert (out / "a.json").read_text() == first  # deterministic


@pytest.mark.parametrize(
    "argv,message",
    [
        (["missing.png"], "not found: missing.png"),
        (["--points-per-side", "0", "IMG"], "points_per_side must be >= 1"),
        (["--precision", "fp16", "IMG"], "invalid choice: 'fp16'"),
    ],
)
def test_usage_errors(tmp_path, folder, tiny, capsys, argv, message):
    ckpt = "unused"
    argv = [str(folder / "a.png") if a == "IMG" else a for a in argv]
    code, _, err = run(["everything", *argv, "-o", tmp_path / "o", "--checkpoint", ckpt], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_collect_jobs_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images .* in folder .*use -r"):
        collect_jobs([tmp_path / "empty"])
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / d / "same.png")
    with pytest.raises(ValueError, match="would both write same.json"):
        collect_jobs([tmp_path / "x" / "same.png", tmp_path / "y" / "same.png"])


def test_empty_result_writes_empty_annotations(tmp_path, folder, tiny, capsys):
    out = tmp_path / "out"
    code, stdout, _ = run(["everything", folder / "a.png", "-o", out, "--points-per-side", "3"], capsys)
    assert code == 0 and "done 1, skipped 0, failed 0" in stdout
    ann = json.loads((out / "a.json").read_text())
    assert ann["annotations"] == [] and ann["image"]["width"] == 80
    # nothing to draw: the overlay is the image itself
    np.testing.assert_array_equal(np.array(Image.open(out / "a_overlay.png")), np.array(Image.open(folder / "a.png")))


def test_use_m2m_flag_reaches_the_generator(tmp_path, folder, tiny, capsys):
    """`--use-m2m` gives the records of SamAutomaticMaskGenerator(use_m2m=True), not the plain ones."""
    from repvit_sam import SamAutomaticMaskGenerator
    from repvit_sam.io import load_image

    opts = dict(points_per_side=3, pred_iou_thresh=0, stability_score_thresh=0)
    scores = {}
    for m2m in (False, True):
        out = tmp_path / f"out{m2m}"
        code, _, _ = run(["everything", folder / "a.png", "-o", out, *FAST, *(["--use-m2m"] if m2m else [])], capsys)
        assert code == 0
        scores[m2m] = sorted(a["predicted_iou"] for a in json.loads((out / "a.json").read_text())["annotations"])
        want = SamAutomaticMaskGenerator(tiny, use_m2m=m2m, **opts).generate(load_image(folder / "a.png"))
        np.testing.assert_allclose(scores[m2m], sorted(r["predicted_iou"] for r in want), atol=1e-6)
    assert scores[False] != scores[True]
