"""The committed trained tiny models (tests/data/trained, made by `python -m
repvit_sam.train.fixtures`) on held-out synthetic images: they learned, the student keeps the
teacher's quality, and `eval coco-prompt` reproduces the validation's figures. The issue's
targets that these fixtures do not reach are marked xfail with the figure reached (none now)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from repvit_sam.utils import file_sha256
from repvit_sam.train.data import read_entries
from repvit_sam.train.validate import coco_records, prompt_validation

from conftest import STUDENT_VARIANT, TEACHER_VARIANT, TRAINED, run_cli, trained_model
from conftest import TRAINED_RECORD as RECORD
CLICKS = 2


def _records(folder):
    entries, _ = read_entries(folder / "annotations.json", folder / "images")
    return coco_records(entries, 16)


@pytest.fixture(scope="module")
def held_out(synthetic_held_out):
    return _records(synthetic_held_out)


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
    assert RECORD["models"]["student.pt"]["variant"] == STUDENT_VARIANT == "tiny_repvit_wide"  # a RepViT student


def test_teacher_learned_from_random_weights(figures):
    t = figures["teacher"]
    # an untrained model scores about 0.02 here; these masks mean something
    assert t["miou_box"] > 0.7 and t["miou_point"] > 0.6, t


def test_student_keeps_90_percent_of_the_teachers_box_miou(figures):
    """Phase 1 (MSE on embeddings), through the teacher's decoder (student_mse.pt holds it)."""
    assert figures["student_mse"]["miou_box"] >= 0.9 * figures["teacher"]["miou_box"], figures


def test_phase_two_does_not_lose_the_students_masks(figures):
    s, m = figures["student"], figures["student_mse"]
    assert s["miou_box"] + s["miou_point"] >= m["miou_box"] + m["miou_point"] - 0.02, figures


def test_issue_targets_teacher_point_and_clicks(figures):
    """1 point >= 0.70, and correction clicks raise the 1-point figure."""
    t = figures["teacher"]
    assert t["miou_point"] >= 0.70, t
    assert t["miou_point_2_clicks"] > t["miou_point"] and t[f"miou_point_{CLICKS + 1}_clicks"] > t["miou_point_2_clicks"], t


@pytest.fixture(scope="module")
def held_out_all(tmp_path_factory):
    """The whole held-out set the validation scores (50 images, 284 instances)."""
    from conftest import held_out_synthetic

    return _records(held_out_synthetic(tmp_path_factory.mktemp("held_out_all") / "synth", 50))


@pytest.fixture(scope="module")
def teacher_all(held_out_all, trained_teacher):
    return prompt_validation(trained_teacher, held_out_all, 0)


def test_teacher_validation_is_reproduced(teacher_all):
    assert teacher_all["instances"] == RECORD["models"]["teacher.pt"]["validation"]["instances"] == 284
    assert teacher_all["miou_box"] == pytest.approx(RECORD["models"]["teacher.pt"]["validation"]["miou_box"], abs=1e-6)


def test_issue_target_teacher_box(teacher_all):
    """On all 50 held-out images, the set models.json's figures are from: 0.854 with the
    stage-5 (8-block) teacher; 0.844 with the 4-block teacher of stage 4, which missed it."""
    assert teacher_all["miou_box"] >= 0.85, teacher_all["miou_box"]


def test_issue_target_phase_two_raises_the_box_miou(held_out_all):
    """On the whole held-out set the validation scores (50 images, 284 instances; the figures
    models.json records), phase 2 raises the box mIoU, and on small objects, where decoupled
    distillation loses most, both the box and the 1-point figures. The overall box gain is small
    (+0.010 with the 8-block teacher's pair; +0.007 with the stage-4 teacher's)."""
    got = {f: prompt_validation(trained_model(f), held_out_all, 0) for f in ("student_mse.pt", "student.pt")}
    for f, g in got.items():
        assert g["instances"] == RECORD["models"][f]["validation"]["instances"] == 284
        assert g["miou_box"] == pytest.approx(RECORD["models"][f]["validation"]["miou_box"], abs=1e-6), f
    p1, p2 = got["student_mse.pt"], got["student.pt"]
    assert p2["miou_box"] > p1["miou_box"], got
    assert p2["miou_box_small"] > p1["miou_box_small"] and p2["miou_point_small"] > p1["miou_point_small"], got


def test_eval_coco_prompt_gives_the_validation_figures(synthetic_held_out, figures, tmp_path, capsys):
    code, out, err = run_cli(["eval", "coco-prompt", "--data", synthetic_held_out, "--annotations",
                              synthetic_held_out / "annotations.json", "--images", synthetic_held_out / "images",
                              "--model", TEACHER_VARIANT, "--checkpoint", TRAINED / "teacher.pt", "--refine", CLICKS,
                              "--no-cache", "--no-progress", "--out", tmp_path], capsys)
    assert code == 0, err
    overall = json.loads(next(tmp_path.glob("*.json")).read_text())["overall"]
    t = figures["teacher"]
    assert overall["mIoU_box"] == pytest.approx(100 * t["miou_box"], abs=0.2)
    assert overall["mIoU_point"] == pytest.approx(100 * t["miou_point"], abs=0.2)
    assert overall[f"mIoU_point_{CLICKS + 1}_clicks"] == pytest.approx(100 * t[f"miou_point_{CLICKS + 1}_clicks"], abs=0.2)


def test_fixture_script_records_the_teacher_stages_it_runs():
    """`python -m repvit_sam.train.fixtures` trains the teacher in TEACHER_STAGES, each from the
    one before (the last grown to 8 blocks first); models.json records those exact commands,
    each stage's variant and where each stage ran."""
    from repvit_sam.train import fixtures as fx

    def opt(options, name):
        return options[options.index(name) + 1]

    stages = fx._teacher_stages(list(fx.FINETUNE), len(fx.TEACHER_STAGES), smoke=False)
    assert stages[0] == fx.FINETUNE and len(stages) == len(fx.TEACHER_STAGES) == 5
    assert [opt(o, "--batch-size") for o in stages] == ["8", "32", "32", "32", "32"]
    assert all(opt(o, "--rounds") == opt(fx.FINETUNE, "--rounds") for o in stages)  # the loss and prompts stay
    # stages 1 to 3 train on the fixtures' 2000 images; stage 4 on 16000 new ones, stage 5 on 8000 more
    data = [fx._stage_data(Path("W"), k, smoke=False) for k in range(len(stages))]
    assert data == [(Path("W/train"), fx.TRAIN_COUNT, 0)] * 3 + [(Path("W/train_seed2"), 16000, 2), (Path("W/train_seed3"), 8000, 3)]
    variants = [fx._stage_variant(k) for k in range(len(stages))]
    assert variants == ["tiny_vit_b_wide"] * 4 + ["tiny_vit_b_deep"] == [s["variant"] for s in RECORD["teacher_stages"]]
    assert RECORD["models"]["teacher.pt"]["variant"] == TEACHER_VARIANT == variants[-1]
    assert [s["data"] for s in RECORD["teacher_stages"]] == [f"repvit-sam synth images --count {c} --seed {s} (256x256)"
                                                             for _, c, s in data]
    assert [opt(o, "--steps") for o in fx._teacher_stages(list(fx.FINETUNE), 2, smoke=True)] == ["3", "3"]
    recorded = RECORD["commands"]["teacher"]
    for k, options in enumerate(stages):
        assert recorded[k][0] == "finetune" and recorded[k][1:1 + len(options)] == options
        assert ("--checkpoint" in recorded[k]) == (k > 0)  # stage k + 1 starts from stage k's weights
        assert ("grown to tiny_vit_b_deep" in recorded[k][-1]) == (k == 4), recorded[k][-1]
    assert [s["steps"] for s in RECORD["teacher_stages"]] == [int(opt(o, "--steps")) for o in stages]
