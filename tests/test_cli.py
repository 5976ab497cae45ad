"""`repvit-sam` end to end on a random-weights checkpoint made here, and one test per bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from repvit_sam.inference.masks import rle_to_mask

from conftest import run_cli as run


@pytest.fixture
def ckpt(vit_t_checkpoint):
    return vit_t_checkpoint


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    from skimage import data

    path = tmp_path_factory.mktemp("img") / "coffee.jpg"
    Image.fromarray(data.coffee()).save(path, quality=95)  # 400 x 600
    return path


def test_segment_end_to_end(tmp_path, ckpt, photo, capsys):
    out_dir = tmp_path / "out"
    code, out, err = run(["segment", photo, "--point", "300,200", "--point", "100,50,0", "--box", "200,100,450,350",
                          "--checkpoint", ckpt, "-o", out_dir], capsys)
    assert code == 0, err
    meta = json.loads((out_dir / "masks.json").read_text())
    assert meta["model"] == "vit_t" and (meta["height"], meta["width"]) == (400, 600)
    assert meta["prompts"]["points"] == [[300.0, 200.0, 1], [100.0, 50.0, 0]]
    assert len(meta["masks"]) == 1
    rec = meta["masks"][0]
    png = np.array(Image.open(out_dir / rec["file"])) > 0
    assert png.shape == (400, 600)
    np.testing.assert_array_equal(rle_to_mask(rec["segmentation"]), png)
    assert rec["area"] == int(png.sum())
    if png.any():
        ys, xs = np.nonzero(png)
        assert rec["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]  # segment_anything's convention
    # the overlay differs from the input where the mask is
    src = np.array(Image.open(photo).convert("RGB")).astype(int)
    ov = np.array(Image.open(out_dir / "overlay.png").convert("RGB")).astype(int)
    assert ov.shape == src.shape
    if png.any():
        assert (np.abs(ov - src).sum(-1)[png] > 0).mean() > 0.9


def test_segment_multimask_and_many_boxes(tmp_path, ckpt, photo, capsys):
    code, _, err = run(["segment", photo, "--point", "300,200", "--multimask", "--checkpoint", ckpt, "-o", tmp_path / "a"], capsys)
    assert code == 0, err
    assert len(json.loads((tmp_path / "a" / "masks.json").read_text())["masks"]) == 3
    code, _, err = run(["segment", photo, "--box", "10,10,200,200", "--box", "300,100,590,390", "--checkpoint", ckpt,
                        "--model", "mobile_sam", "-o", tmp_path / "b"], capsys)
    assert code == 0, err
    recs = json.loads((tmp_path / "b" / "masks.json").read_text())["masks"]
    assert [r["prompt_index"] for r in recs] == [0, 1]
    assert sorted(p.name for p in (tmp_path / "b").glob("mask_*.png")) == ["mask_000.png", "mask_001.png"]


@pytest.mark.parametrize(
    "args,match",
    [
        (["--box", "1,2,3"], "--box needs 4 numbers"),
        (["--point", "a,b"], "--point must be comma-separated numbers"),
        (["--point", "10,10,2"], "--point label must be 1"),
        ([], "give at least one --point"),
        (["--point", "700,10"], "outside the 600x400 image"),
        (["--point", "10,10", "--model", "vit_x"], "unknown model 'vit_x'"),
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path, ckpt, photo, capsys, args, match):
    code, _, err = run(["segment", photo, *args, "--checkpoint", ckpt, "-o", tmp_path], capsys)
    assert code == 2
    assert match in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_missing_image_and_checkpoint_are_usage_errors(tmp_path, ckpt, capsys):
    code, _, err = run(["segment", tmp_path / "nope.jpg", "--point", "1,1", "--checkpoint", ckpt, "-o", tmp_path], capsys)
    assert code == 2 and "image not found" in err
    img = tmp_path / "i.png"
    Image.new("RGB", (20, 20)).save(img)
    code, _, err = run(["segment", img, "--point", "1,1", "--checkpoint", tmp_path / "none.pt", "-o", tmp_path], capsys)
    assert code == 2 and "file not found" in err


def test_runtime_errors_exit_1_without_traceback(tmp_path, ckpt, photo, capsys):
    bad_img = tmp_path / "bad.jpg"
    bad_img.write_bytes(photo.read_bytes()[:2000])  # truncated JPEG
    code, _, err = run(["segment", bad_img, "--point", "1,1", "--checkpoint", ckpt, "-o", tmp_path / "o"], capsys)
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    code, _, err = run(["segment", photo, "--point", "1,1", "--checkpoint", ckpt, "--model", "repvit", "-o", tmp_path / "o"], capsys)
    assert code == 1 and "looks like a 'vit_t' checkpoint" in err
    code, _, err = run(["--debug", "segment", photo, "--point", "1,1", "--checkpoint", ckpt, "--model", "repvit", "-o", tmp_path / "o"], capsys)
    assert code == 1 and "Traceback" in err


def test_offline_download_says_url_and_destination(tmp_path, photo, capsys, monkeypatch):
    from dataclasses import replace

    from repvit_sam import hub

    monkeypatch.setenv("REPVIT_SAM_HOME", str(tmp_path / "cache"))
    spec = hub.KNOWN_CHECKPOINTS["repvit"]
    monkeypatch.setitem(hub.KNOWN_CHECKPOINTS, "repvit", replace(spec, url="http://127.0.0.1:9/repvit_sam.pt"))
    code, _, err = run(["segment", photo, "--point", "1,1", "-o", tmp_path / "o"], capsys)
    assert code == 1
    assert "http://127.0.0.1:9/repvit_sam.pt" in err and str(tmp_path / "cache") in err
    assert len(err.strip().splitlines()) == 1


def test_help_lists_subcommands_and_module_entry_point():
    r = subprocess.run([sys.executable, "-m", "repvit_sam", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    assert "segment" in r.stdout and "bench" in r.stdout
    r = subprocess.run([sys.executable, "-m", "repvit_sam"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
