"""``repvit-sam track``, ``eval davis`` and ``eval uvo`` end to end on a small synthetic set
(random tiny weights: outputs, layouts, and bad input; meaningful scores: test_video_trained.py)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_cli


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def davis(tmp_path_factory):
    from repvit_sam.synthetic import write_video

    root = tmp_path_factory.mktemp("davis")
    write_video(root, count=2, seed=5, size=(128, 96), num_frames=8, num_objects=2, reenter=False, quiet=True)
    return root


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from repvit_sam import build_sam

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(build_sam("tiny_repvit").state_dict(), path)
    return path


FAST = ["--refine-iters", "1", "--no-progress"]


def test_track_writes_pngs_video_and_json(davis, ckpt, tmp_path, capsys):
    seq = davis / "JPEGImages" / "480p" / "seq0000"
    ann = davis / "Annotations" / "480p" / "seq0000" / "00000.png"
    out = tmp_path / "out"
    code, stdout, err = run_cli(["track", seq, "--mask", f"0,{ann}", "--point", "4,60,40,1,7", "--box", "4,10,10,50,40,7",
                                 "--checkpoint", ckpt, "-o", out, *FAST], capsys)
    assert code == 0, err
    pngs = sorted((out / "masks").glob("*.png"))
    assert [p.stem for p in pngs] == [f"{t:05d}" for t in range(8)]
    first = Image.open(pngs[0])
    assert first.mode == "P" and first.size == (128, 96)
    np.testing.assert_array_equal(np.array(first), np.array(Image.open(ann)))  # the given masks on frame 0
    doc = json.loads((out / "masks.json").read_text())
    assert doc["complete"] and doc["num_frames"] == 8 and (doc["height"], doc["width"]) == (96, 128)
    assert [o["id"] for o in doc["objects"]] == [1, 2, 7]
    assert doc["objects"][2] == {"id": 7, "prompt_frame": 4, "prompt": "points+box"}
    rec = doc["frames"][0]["objects"]["1"]
    from repvit_sam.inference.masks import rle_to_mask

    m = rle_to_mask(rec["segmentation"])
    gt = np.array(Image.open(ann)) == 1
    np.testing.assert_array_equal(m, gt)
    ys, xs = np.nonzero(gt)
    assert rec["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]  # x_max - x_min
    assert rec["area"] == gt.sum() and rec["score"] == 1.0
    from repvit_sam.video.frames import open_frames

    video = open_frames(out / "overlay.mp4")
    assert len(video) == 8 and video.size == (96, 128)
    assert "wrote 8 mask PNGs" in stdout


def test_track_bad_input_one_line(davis, ckpt, tmp_path, capsys):
    seq = davis / "JPEGImages" / "480p" / "seq0000"
    ann = davis / "Annotations" / "480p" / "seq0000" / "00000.png"
    cases = [
        (["track", tmp_path / "nope.mp4", "--point", "0,1,1"], "video not found"),
        (["track", seq, "--point", "9,10,10"], "prompted on frame 9, but the video has 8 frames"),
        (["track", seq, "--point", "0,10,10,1,2", "--point", "3,10,10,1,2"], "object id 2 is already prompted on frame 0"),
        (["track", seq, "--mask", f"0,{ann}", "--point", "2,10,10,1,1"], "object id 1 is already prompted on frame 2"),
        (["track", seq], "give at least one --point, --box or --mask"),
        (["track", seq, "--point", "0,10"], "--point takes 3..5 numbers"),
        (["track", seq, "--point", "0,10,10,1,300"], "object id 300 is too large"),
        (["track", seq, "--point", "0,10,10", "--video-out", "x.gif"], "--video-out x.gif: use one of"),
        (["track", seq, "--point", "0,10,10", "--refine-iters", "-1"], "refine_iters must be >= 0"),
    ]
    small = tmp_path / "small.png"
    Image.fromarray(np.ones((20, 30), np.uint8) * 255).save(small)
    cases.append((["track", seq, "--mask", f"0,{small}"], "is 30x20 but the video's frames are 128x96"))
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((96, 128, 3), np.uint8)).save(rgb)
    cases.append((["track", seq, "--mask", f"0,{rgb}"], "is a RGB image"))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"garbage" * 50)
    cases.append((["track", broken, "--point", "0,1,1"], "cannot read video"))
    for argv, message in cases:
        code, _, err = run_cli([*argv, "--checkpoint", ckpt, "-o", tmp_path / "o", "--no-progress"], capsys)
        assert code == 2, (argv, err)
        assert message in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "o" / "masks.json").exists()  # nothing ran


def test_track_keeps_what_was_written_when_a_frame_is_corrupt(davis, ckpt, tmp_path, capsys):
    seq = tmp_path / "seq"
    shutil.copytree(davis / "JPEGImages" / "480p" / "seq0000", seq)
    (seq / "00005.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    out = tmp_path / "out"
    code, _, err = run_cli(["track", seq, "--point", "0,60,40", "--checkpoint", ckpt, "-o", out, *FAST], capsys)
    assert code == 1 and "frame 5 (00005.jpg)" in err and err.count("\n") == 1
    assert sorted(p.stem for p in (out / "masks").glob("*.png")) == [f"{t:05d}" for t in range(5)]
    doc = json.loads((out / "masks.json").read_text())
    assert not doc["complete"] and [f["frame"] for f in doc["frames"]] == list(range(5))


def test_eval_davis_tracks_and_scores(davis, ckpt, tmp_path, capsys):
    out = tmp_path / "e"
    code, stdout, err = run_cli(["eval", "davis", "--data", davis, "--checkpoint", ckpt, "--out", out, *FAST], capsys)
    assert code == 0, err
    doc = json.loads((out / "results.json").read_text())
    overall = doc["overall"]
    for key in ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"):
        assert key in overall
    assert overall["J&F-Mean"] == pytest.approx((overall["J-Mean"] + overall["F-Mean"]) / 2)
    assert [s["sequence"] for s in doc["per_sequence"]] == ["seq0000", "seq0001"]
    assert doc["protocol"]["options"]["refine_iters"] == 1
    assert sorted(p.name for p in (out / "results" / "seq0000").glob("*.png")) == [f"{t:05d}.png" for t in range(8)]
    assert "2 sequences" in (out / "results.md").read_text()
    # the folder it wrote scores the same when given as --results (no model needed)
    code, _, err = run_cli(["eval", "davis", "--data", davis, "--results", out / "results", "--out", tmp_path / "e2", "--no-progress"], capsys)
    assert code == 0, err
    again = json.loads((tmp_path / "e2" / "results.json").read_text())["overall"]
    assert again == overall


def test_eval_davis_ground_truth_scores_one(davis, tmp_path, capsys):
    code, _, err = run_cli(["eval", "davis", "--data", davis, "--results", davis / "Annotations" / "480p", "--out", tmp_path, "--no-progress"], capsys)
    assert code == 0, err
    overall = json.loads((tmp_path / "results.json").read_text())["overall"]
    assert overall["J&F-Mean"] == 1.0 and overall["J-Decay"] == 0.0 and overall["objects"] == 4


def test_eval_davis_bad_layouts(davis, tmp_path, capsys):
    def fails(root, message, extra=()):
        code, _, err = run_cli(["eval", "davis", "--data", root, "--out", tmp_path / "o", "--no-progress", *extra], capsys)
        assert code != 0 and message in err and err.count("\n") == 1, err

    for missing, message in (("ImageSets", "has no ImageSets/2017/val.txt"), ("Annotations", "has no Annotations/480p folder"),
                             ("JPEGImages", "has no JPEGImages/480p folder")):
        broken = tmp_path / f"no_{missing}"
        shutil.copytree(davis, broken)
        shutil.rmtree(broken / missing)
        fails(broken, message, ["--results", davis / "Annotations" / "480p"])
    broken = tmp_path / "no_seq"
    shutil.copytree(davis, broken)
    shutil.rmtree(broken / "JPEGImages" / "480p" / "seq0001")
    fails(broken, "sequence seq0001 is listed in val.txt but", ["--results", davis / "Annotations" / "480p"])
    results = tmp_path / "partial"
    shutil.copytree(davis / "Annotations" / "480p", results)
    (results / "seq0001" / "00004.png").unlink()
    fails(davis, "the results folder is missing frame 00004.png of sequence seq0001", ["--results", results])


def test_eval_uvo_scores_oracle_tracks(davis, ckpt, monkeypatch):
    """The UVO pipeline (frame-0 proposals -> tracks -> ST-IoU -> AR) with the generator and the
    tracker replaced by the ground truth: AR = 1; dropping a proposal loses its track."""
    from repvit_sam.evaluation.tasks import uvo
    from repvit_sam.evaluation.video_datasets import default_vis_paths, load_vis, segmentation_to_mask
    from repvit_sam.video.prompts import FrameResult

    videos = load_vis(*default_vis_paths(davis, None, None))
    assert [len(v.tracks) for v in videos] == [2, 2]

    class Oracle:
        """Replays the ground-truth track whose frame-0 mask each prompt is."""

        options = None

        def __init__(self, video):
            self.video = video

        def propagate(self, src, prompts, direction):
            v = self.video
            gts = [[segmentation_to_mask(s, v.height, v.width) for s in tr["segmentations"]] for tr in v.tracks]
            which = {}
            for k, p in prompts.objects.items():
                which[k] = next(i for i, g in enumerate(gts) if g[0] is not None and (g[0] == p.mask).all())
            for t in range(len(v.frames)):
                masks = {k: gts[i][t] if gts[i][t] is not None else np.zeros((v.height, v.width), bool) for k, i in which.items()}
                yield FrameResult(t, masks, {k: 0.9 for k in masks})

    for keep in (2, 1):
        def proposals(model, frame, pps, max_masks, v=None):
            return [{"segmentation": segmentation_to_mask(tr["segmentations"][0], frame.shape[0], frame.shape[1]), "predicted_iou": 0.9}
                    for tr in current.tracks][:keep]

        monkeypatch.setattr(uvo, "frame0_masks", proposals)
        matches = []
        for current in videos:
            res = uvo.track_video(Oracle(current), None, current, 32, 100)
            matches.append(res["match"])
            assert len(res["predictions"]) == keep
            assert len(res["predictions"][0]["segmentations"]) == len(current.frames)
        from repvit_sam.evaluation.video_metrics import average_recall

        assert average_recall(matches)["AR"] == pytest.approx(keep / 2)


def test_eval_uvo_runs_and_writes_predictions(davis, ckpt, tmp_path, capsys):
    code, _, err = run_cli(["eval", "uvo", "--data", davis, "--checkpoint", ckpt, "--out", tmp_path, "--points-per-side", "4",
                            "--limit", "1", *FAST], capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "results.json").read_text())
    assert set(doc["overall"]) >= {"AR100", "AR100_small", "AR100_medium", "AR100_large"}
    assert doc["per_video"][0]["tracks"] == 2
    assert isinstance(json.loads((tmp_path / "predictions.json").read_text()), list)
    code, _, err = run_cli(["eval", "uvo", "--data", tmp_path / "none", "--checkpoint", ckpt, "--no-progress"], capsys)
    assert code != 0 and "not found" in err and err.count("\n") == 1
