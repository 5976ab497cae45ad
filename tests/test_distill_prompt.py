"""`distill train --phase prompt` (EdgeSAM's prompt-in-the-loop phase 2) from the committed
trained fixtures: the run trains the whole student (prompt encoder frozen), logs its rounds and a
coco-prompt validation, and exports an official-format file without a teacher checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from repvit_sam import build_sam
from repvit_sam.weights import read_checkpoint

from conftest import STUDENT_VARIANT, TEACHER_VARIANT, TRAINED, run_cli


@pytest.fixture(scope="module")
def phase2(tmp_path_factory):
    from repvit_sam.synthetic import write_images

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("p2")
    write_images(root / "synth", count=8, seed=7, size=(256, 256), quiet=True)
    images, ann = root / "synth" / "images", root / "synth" / "annotations.json"
    from repvit_sam.cli import main

    try:
        assert main(["distill", "embed", "--teacher", TEACHER_VARIANT, "--teacher-checkpoint", str(TRAINED / "teacher.pt"),
                     "--images", str(images), "--out", str(root / "emb"), "--workers", "0"]) == 0
        assert main(["distill", "train", "--phase", "prompt", "--embeddings", str(root / "emb"), "--images", str(images),
                     "--annotations", str(ann), "--student", STUDENT_VARIANT, "--student-init", str(TRAINED / "student_mse.pt"),
                     "--teacher-checkpoint", str(TRAINED / "teacher.pt"), "--out", str(root / "run"), "--steps", "4",
                     "--batch-size", "2", "--val-images", "2", "--log-every", "1", "--max-instances", "3", "--workers", "0"]) == 0
    finally:
        torch.set_num_threads(old)
    return root


def test_phase_two_trains_the_student_against_the_teacher(phase2, capsys):
    run = phase2 / "run"
    recs = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert {"mask_loss_r0", "mask_loss_r1", "mask_loss_r2", "iou_r2"} <= train[0].keys()  # first prompt + 2 correction rounds
    val = [r for r in recs if r["kind"] == "val"][-1]
    assert val["step"] == 4 and 0 <= val["miou_box"] <= 1 and "miou_point_3_clicks" in val
    ck = read_checkpoint(run / "checkpoints" / "last.pt")
    assert ck["phase"] == "prompt" and ck["options"]["trainable"] == ["image_encoder", "mask_decoder"]
    out = phase2 / "student.pt"
    code, _, err = run_cli(["distill", "export", "--run", run, "-o", out], capsys)  # no teacher checkpoint needed
    assert code == 0, err
    student = build_sam(STUDENT_VARIANT, checkpoint=out)
    init = build_sam(STUDENT_VARIANT, checkpoint=TRAINED / "student_mse.pt")
    teacher = build_sam(TEACHER_VARIANT, checkpoint=TRAINED / "teacher.pt")
    for (k, a), b in zip(student.prompt_encoder.state_dict().items(), teacher.prompt_encoder.state_dict().values()):
        assert torch.equal(a, b), k  # frozen: the teacher's
    moved = [k for k, v in student.mask_decoder.state_dict().items() if not torch.equal(v, init.mask_decoder.state_dict()[k])]
    assert moved, "the mask decoder should have been trained"
    assert any(not torch.equal(v, init.image_encoder.state_dict()[k]) for k, v in student.image_encoder.state_dict().items())


def test_phase_two_needs_a_student_and_masks(phase2, tmp_path, capsys):
    base = ["distill", "train", "--phase", "prompt", "--embeddings", phase2 / "emb", "--images", phase2 / "synth" / "images",
            "--student", STUDENT_VARIANT, "--teacher-checkpoint", TRAINED / "teacher.pt", "--steps", "1", "--batch-size", "2", "--workers", "0"]
    code, _, err = run_cli([*base, "--annotations", phase2 / "synth" / "annotations.json", "--out", tmp_path / "a"], capsys)
    assert code == 1 and "pass --student-init" in err
    code, _, err = run_cli([*base, "--student-init", TRAINED / "student_mse.pt", "--out", tmp_path / "b"], capsys)  # no SA-1B JSONs beside the images
    assert code == 1 and "no SA-1B JSONs beside the images" in err and "pass --annotations" in err
