"""`repvit-sam distill` end to end on small images with the test-size variants of the variant
table (teacher tiny_vit_b, student tiny_repvit: 256-pixel inputs, 16x16 embeddings): embed with 2
ranks under torchrun -> train with 2 ranks, killed with SIGKILL and resumed -> export; plus the
error paths. Three torchrun launches in all; everything else runs in-process. The trainer's own
pieces (schedule, data order, batch norm) are tested in tests/test_train_*.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from repvit_sam import SamPredictor, build_from_config
from repvit_sam.cli import main
from repvit_sam.distill import shards
from repvit_sam.config import VARIANTS
from repvit_sam.distill.configs import RECIPES
from repvit_sam.train.trainer import KILL_ENV
from repvit_sam.weights import read_checkpoint

N_IMAGES, SHARD = 12, 5  # 3 shards: rank 0 computes shards 0 and 2, rank 1 shard 1
TEACHER, STUDENT = "tiny_vit_b", "tiny_repvit"
TRAIN = ["--student", STUDENT, "--recipe", "tiny", "--steps", "12", "--batch-size", "4", "--workers", "0"]


def torchrun(*argv, env=None, nproc=2):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "repvit_sam", "distill", *map(str, argv)]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=240)


def cli(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def records(run: Path, kind="train"):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """12 SA-1B-style images (sa_N.jpg + sa_N.json) of mixed sizes, and a tiny teacher file."""
    root = tmp_path_factory.mktemp("distill")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        h, w = (48, 80) if i % 2 else (90, 60)
        a = np.zeros((h, w, 3), np.uint8) + rng.integers(0, 255, 3, dtype=np.uint8)
        y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
        a[y0 : y0 + h // 3, x0 : x0 + w // 3] = rng.integers(0, 255, 3, dtype=np.uint8)
        Image.fromarray(a).save(images / f"sa_{i}.png")
        ann = {"image": {"height": h, "width": w}, "annotations": [{"bbox": [x0, y0, w // 3, h // 3], "area": (w // 3) * (h // 3)}]}
        (images / f"sa_{i}.json").write_text(json.dumps(ann))
    torch.manual_seed(0)
    teacher = build_from_config(VARIANTS[TEACHER])
    torch.save(teacher.state_dict(), root / "teacher.pt")
    return root


@pytest.fixture(scope="module")
def embeddings(work):
    """Embeddings computed by 2 ranks under torchrun (`python -m repvit_sam distill embed`)."""
    out = work / "emb"
    r = torchrun("embed", "--teacher", TEACHER, "--teacher-checkpoint", work / "teacher.pt",
                 "--images", work / "images", "--out", out, "--shard-size", SHARD, "--workers", "0")
    assert r.returncode == 0, r.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def reference_run(work, embeddings):
    """An uninterrupted 1-rank run with the same global batch (in-process), TensorBoard blocked."""
    run = work / "run_ref"
    saved = sys.modules.get("torch.utils.tensorboard")
    sys.modules["torch.utils.tensorboard"] = None  # import fails -> JSONL only, with a warning
    try:
        code = main(["distill", "train", "--embeddings", str(embeddings), "--images", str(work / "images"), "--out", str(run), *TRAIN])
    finally:
        if saved is None:
            sys.modules.pop("torch.utils.tensorboard", None)
        else:
            sys.modules["torch.utils.tensorboard"] = saved
    assert code == 0
    return run


@pytest.fixture(scope="module")
def resumed_run(work, embeddings):
    """2 ranks under torchrun, rank 0 SIGKILLed after step 6 (last checkpoint: step 4), then
    resumed with --resume by a second torchrun."""
    run = work / "run_2ranks"
    args = ["train", "--embeddings", embeddings, "--images", work / "images", "--out", run, *TRAIN[:-1], "1"]
    killed = torchrun(*args, env={KILL_ENV: "6"})
    assert killed.returncode != 0, "the run should have been killed"
    at_kill = {
        "ckpt_step": read_checkpoint(run / "checkpoints" / "last.pt")["step"],
        "logged_steps": [r["step"] for r in records(run)],
    }
    resumed = torchrun("train", "--embeddings", embeddings, "--images", work / "images", "--out", run, "--resume", "--workers", "1")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    return run, at_kill, resumed.stderr


# ------------------------------------------------------------------ embed
def test_embed_two_ranks_index_covers_every_image_once(work, embeddings):
    index = json.loads((embeddings / "index.json").read_text())
    keys = [k for s in index["shards"] for k in s["keys"]]
    assert keys == sorted(f"sa_{i}" for i in range(N_IMAGES))
    assert [len(s["keys"]) for s in index["shards"]] == [5, 5, 2]
    assert index["embed_shape"] == [32, 16, 16] and index["teacher"] == TEACHER
    for s in index["shards"]:
        arr = np.load(embeddings / s["file"], allow_pickle=False)
        assert arr.dtype == np.float16 and list(arr.shape) == s["shape"] == [len(s["keys"]), 32, 16, 16]
        assert shards.file_sha256(embeddings / s["file"]) == s["sha256"]
    assert not list(embeddings.glob(".*.tmp")), "temporary files left behind"


def test_embeddings_equal_the_predictors_image_embedding(work, embeddings):
    """Preprocessing is the inference path: stored embedding == SamPredictor's (to fp16)."""
    torch.manual_seed(0)
    teacher = build_from_config(VARIANTS[TEACHER])
    teacher.load_state_dict(torch.load(work / "teacher.pt", weights_only=True))
    predictor = SamPredictor(teacher)
    store = shards.EmbeddingStore(embeddings)
    for j in (0, 1, 11):  # portrait, landscape, last shard
        predictor.set_image(np.array(Image.open(work / "images" / f"{store.keys[j]}.png")))
        expected = predictor.get_image_embedding()[0]
        assert torch.allclose(store[j], expected, atol=2e-3, rtol=2e-3)


def test_embed_resume_skips_finished_shards(work, embeddings, capsys):
    out = work / "emb_resume"
    shutil.copytree(embeddings, out)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard_*")}
    old_sha = json.loads((out / "shard_00001.json").read_text())["sha256"]
    for name in ("shard_00001.npy", "shard_00001.json", "index.json"):
        (out / name).unlink()
    code, out_text, err = cli(["distill", "embed", "--teacher", TEACHER, "--teacher-checkpoint", work / "teacher.pt",
                               "--images", work / "images", "--out", out, "--shard-size", SHARD, "--workers", "0"], capsys)
    assert code == 0, err
    assert "2 already finished, 5 images to embed" in err
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("shard_*")}
    assert {k: v for k, v in after.items() if "00001" not in k} == {k: v for k, v in before.items() if "00001" not in k}
    assert json.loads((out / "shard_00001.json").read_text())["sha256"] == old_sha  # deterministic
    assert (out / "index.json").read_text() == (embeddings / "index.json").read_text()


def test_embed_refuses_a_folder_of_other_work(work, embeddings, capsys):
    code, _, err = cli(["distill", "embed", "--teacher", TEACHER, "--teacher-checkpoint", work / "teacher.pt",
                        "--images", work / "images", "--out", embeddings, "--shard-size", "4"], capsys)
    assert code == 1 and "already holds embeddings of other work (different shard_size" in err


def test_corrupt_shard_is_reported_with_what_to_do(work, embeddings, capsys):
    bad = work / "emb_corrupt"
    shutil.copytree(embeddings, bad)
    data = bytearray((bad / "shard_00001.npy").read_bytes())
    data[-3] ^= 0xFF
    (bad / "shard_00001.npy").write_bytes(bytes(data))
    code, _, err = cli(["distill", "train", "--embeddings", bad, "--images", work / "images", "--out", work / "run_bad", *TRAIN], capsys)
    assert code == 1
    assert "shard_00001.npy is corrupt: SHA-256" in err and "re-run `repvit-sam distill embed`" in err
    assert len(err.strip().splitlines()) <= 2  # a log line and the one-line error, no traceback
    with pytest.raises(shards.ShardError, match="corrupt"):
        shards.EmbeddingStore(bad)[5]  # row 5 lives in shard 1
    assert shards.EmbeddingStore(bad)[0].shape == (32, 16, 16)  # intact shards still read


def test_incomplete_embeddings_and_missing_images_give_clear_errors(work, embeddings, capsys):
    part = work / "emb_partial"
    shutil.copytree(embeddings, part)
    (part / "index.json").unlink()
    (part / "shard_00002.json").unlink()
    code, _, err = cli(["distill", "train", "--embeddings", part, "--images", work / "images", "--out", work / "r1", *TRAIN], capsys)
    assert code == 1 and "incomplete (2 of 3 shards finished)" in err

    fewer = work / "images_fewer"
    shutil.copytree(work / "images", fewer)
    (fewer / "sa_3.png").unlink()
    code, _, err = cli(["distill", "train", "--embeddings", embeddings, "--images", fewer, "--out", work / "r2", *TRAIN], capsys)
    assert code == 1 and "1 image(s) of the embeddings index are missing" in err and "sa_3" in err

    code, _, err = cli(["distill", "embed", "--teacher", TEACHER, "--teacher-checkpoint", work / "teacher.pt",
                        "--images", work / "no_such_dir", "--out", work / "e3"], capsys)
    assert code == 2 and "--images folder not found" in err
    empty = work / "empty"
    empty.mkdir()
    code, _, err = cli(["distill", "embed", "--teacher", TEACHER, "--teacher-checkpoint", work / "teacher.pt",
                        "--images", empty, "--out", work / "e4"], capsys)
    assert code == 1 and "no images" in err


# ------------------------------------------------------------------ train
def test_loss_falls_and_jsonl_replaces_missing_tensorboard(reference_run, capsys):
    losses = [r["loss"] for r in records(reference_run)]
    assert [r["step"] for r in records(reference_run)] == list(range(1, 13))
    assert np.mean(losses[-3:]) < 0.7 * losses[0], losses
    val = records(reference_run, "val")
    assert val[-1]["step"] == 12 and 0.0 <= val[-1]["val_miou"] <= 1.0 and val[-1]["val_mse"] > 0
    assert not (reference_run / "tb").exists()


def test_sigkilled_two_rank_run_resumes_to_the_reference_trajectory(reference_run, resumed_run):
    run, at_kill, stderr = resumed_run
    assert at_kill["ckpt_step"] == 4 and at_kill["logged_steps"] == [1, 2, 3, 4, 5, 6]
    assert "resumed from" in stderr and "at step 4 of 12" in stderr
    ref, got = records(reference_run), records(run)
    assert [r["step"] for r in got] == list(range(1, 13))  # steps 5-6 of the killed run were dropped, redone once
    # 2 ranks x 2 images with synchronised batch norm == 1 rank x 4 images
    np.testing.assert_allclose([r["loss"] for r in got], [r["loss"] for r in ref], rtol=1e-4)
    np.testing.assert_allclose([r["lr"] for r in got], [r["lr"] for r in ref], rtol=1e-9)
    ck = read_checkpoint(run / "checkpoints" / "last.pt")  # weights_only=True
    ck_ref = read_checkpoint(reference_run / "checkpoints" / "last.pt")
    assert ck["step"] == 12 and ck["world_size"] == 2 and len(ck["rng"]) == 2
    # Parameters agree as a whole (Adam turns float-noise-sized gradients of a few near-zero
    # entries into +-lr steps, so single entries may differ by a few lr).
    a = torch.cat([v.flatten().float() for k, v in ck["model"].items() if v.is_floating_point()])
    b = torch.cat([v.flatten().float() for k, v in ck_ref["model"].items() if v.is_floating_point()])
    assert (a - b).norm() / b.norm() < 1e-2
    assert list((run / "tb").glob("events.out.tfevents.*")), "TensorBoard events expected"


def test_training_refuses_to_overwrite_a_run(work, embeddings, reference_run, capsys):
    code, _, err = cli(["distill", "train", "--embeddings", embeddings, "--images", work / "images", "--out", reference_run, *TRAIN], capsys)
    assert code == 1 and "already holds a run; add --resume" in err


def test_validation_is_perfect_for_the_teacher_itself(work):
    from repvit_sam.distill.common import build_decoder_sam
    from repvit_sam.distill.data import Preprocessor, read_image
    from repvit_sam.distill.train import validate

    cfg = VARIANTS[TEACHER]
    sd = torch.load(work / "teacher.pt", weights_only=True)
    teacher = build_from_config(cfg)
    teacher.load_state_dict(sd)
    sam = build_decoder_sam(cfg, sd, "teacher.pt", torch.device("cpu"))
    pre = Preprocessor(cfg)
    paths = [work / "images" / f"sa_{i}.png" for i in (0, 1)]
    with torch.no_grad():
        targets = [teacher.image_encoder(pre(read_image(p))[0][None])[0] for p in paths]
    same = validate(teacher.image_encoder, paths, targets, pre, sam, prompts=3, device=torch.device("cpu"))
    assert same["val_mse"] == 0.0 and same["val_miou"] == 1.0 and same["val_prompts"] == 2  # 1 SA-1B box per image
    worse = validate(teacher.image_encoder, paths, [t + 3.0 * torch.randn_like(t) for t in targets], pre, sam, 3, torch.device("cpu"))
    assert worse["val_mse"] > 1.0 and worse["val_miou"] < 1.0


def test_paper_recipe():
    assert RECIPES["paper"].epochs == 8 and RECIPES["paper"].batch_size % 8 == 0


# ------------------------------------------------------------------ export
def test_export_loads_strictly_and_takes_the_right_parts(work, reference_run, capsys):
    out = work / "exported.pt"
    code, text, err = cli(["distill", "export", "--run", reference_run, "--teacher-checkpoint", work / "teacher.pt", "-o", out], capsys)
    assert code == 0, err
    sd = read_checkpoint(out)
    model = build_from_config(VARIANTS[STUDENT])
    model.load_state_dict(sd, strict=True)
    assert list(sd) == list(model.state_dict())
    teacher_sd = torch.load(work / "teacher.pt", weights_only=True)
    trained = read_checkpoint(reference_run / "checkpoints" / "last.pt")["model"]
    for k, v in sd.items():
        src = trained[k[len("image_encoder."):]] if k.startswith("image_encoder.") else teacher_sd[k]
        assert torch.equal(v, src), k


def test_export_of_a_repvit_student_matches_the_official_file_layout(work, tmp_path, capsys):
    """A `repvit` run (random weights, no training) with a MobileSAM-shaped teacher file: the
    export has exactly the keys and shapes of the official repvit_sam.pt and build_sam loads it."""
    from repvit_sam import build_sam
    from repvit_sam.train.state import CKPT_FORMAT, save_checkpoint

    torch.manual_seed(1)
    student = build_sam("repvit")
    run = tmp_path / "run"
    save_checkpoint(run / "checkpoints" / "last.pt", {
        "format": CKPT_FORMAT, "kind": "repvit_sam.distill", "step": 0, "student": "repvit", "teacher": "vit_t",
        "model": student.image_encoder.state_dict(),
    })
    teacher_file = tmp_path / "vit_t.pt"
    teacher = build_sam("vit_t")
    torch.save(teacher.state_dict(), teacher_file)
    out = tmp_path / "repvit_distilled.pt"
    code, text, err = cli(["distill", "export", "--run", run, "--teacher-checkpoint", teacher_file, "-o", out], capsys)
    assert code == 0, err
    assert 'build_sam("repvit"' in text
    manifest = json.loads((Path(__file__).parent / "data" / "manifests" / "repvit.json").read_text())
    sd = read_checkpoint(out)
    assert list(sd) == list(manifest)
    assert all(list(sd[k].shape) == m["shape"] for k, m in manifest.items())
    loaded = build_sam("repvit", checkpoint=out)
    assert torch.equal(loaded.mask_decoder.iou_token.weight, teacher.mask_decoder.iou_token.weight)


def test_cli_usage_errors(work, capsys):
    code, _, err = cli(["distill"], capsys)
    assert code == 2
    code, _, err = cli(["distill", "train", "--embeddings", work, "--images", work, "--out", work / "x", "--steps", "2", "--epochs", "1"], capsys)
    assert code == 2 and "not allowed with argument" in err
    code, _, err = cli(["distill", "export", "--run", work / "nope", "--teacher-checkpoint", work / "teacher.pt", "-o", work / "o.pt"], capsys)
    assert code == 2 and "--run folder not found" in err
