"""`repvit-sam eval coco-prompt` end to end (evaluation/tasks/coco_prompt.py).
"""

from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from repvit_sam.evaluation.cache import weights_hash
from repvit_sam.inference.predictor import SamPredictor

from eval_data import *  # noqa: F401,F403  (fixtures tiny / hooked and the dataset writers)


def test_coco_prompt_end_to_end_with_cache(tmp_path, tiny, hooked, capsys):
    root = tmp_path / "coco"
    make_coco(root)
    cache = tmp_path / "cache"
    args = ["eval", "coco-prompt", "--data", root, "--refine", "2", "--cache-dir", cache, "--no-progress"]
    code, out, err = run(args + ["--out", tmp_path / "o1"], capsys)
    assert code == 0, err
    assert hooked.calls == 2  # two annotated images embedded once each
    r = results(tmp_path / "o1")
    assert r["model"]["name"] == "tiny_repvit" and r["model"]["weights_sha256"] == weights_hash(tiny)
    assert r["protocol"]["select_box"] == "single" and r["protocol"]["select_point"] == "best-score" and r["protocol"]["refine_clicks"] == 2
    inst = [i for p in r["per_image"] for i in p["instances"]]
    assert [i["ann_id"] for i in inst] == [1, 2, 4]  # the crowd annotation is skipped
    assert r["overall"]["mIoU_box"] == pytest.approx(100 * np.mean([i["box_iou"] for i in inst]))
    assert r["overall"]["mIoU_point_3_clicks"] == pytest.approx(100 * np.mean([i["refine_ious"][1] for i in inst]))
    assert all(len(i["clicks"]) == 3 for i in inst)
    # first point in the 20 x 24 RLE rectangle (x 5..24, y 6..29): 10 px from outside at x 14..15,
    # y 15..20 (the width limits it); the first of those in raster order is (14, 15)
    assert inst[0]["point"] == [14, 15]
    # the box IoU, recomputed through the plain SamPredictor on the same image
    pred = SamPredictor(tiny)
    pred.set_image(np.array(Image.open(root / "val2017" / "000000000001.jpg").convert("RGB")))
    m, _, _ = pred.predict(box=np.array([5, 6, 25, 30]), multimask_output=False)
    gt = rect(48, 64, 5, 6, 25, 30)
    assert inst[0]["box_iou"] == pytest.approx((m[0] & gt).sum() / max((m[0] | gt).sum(), 1))
    md = (tmp_path / "o1" / "results.md").read_text()
    assert "| mIoU box | mIoU 1 point | mIoU 2 clicks | mIoU 3 clicks |" in md and "mIoU box" in out
    assert r["embedding_cache"]["misses"] == 2 and len(list((cache).rglob("*.pt"))) == 2

    # re-run with another selection rule: every embedding comes from the cache
    calls = hooked.calls
    code, _, err = run(args + ["--out", tmp_path / "o2", "--select-point", "oracle"], capsys)
    assert code == 0, err
    assert hooked.calls == calls  # the encoder was not called again
    r2 = results(tmp_path / "o2")
    assert r2["embedding_cache"]["hits"] == 2 and r2["embedding_cache"]["misses"] == 0
    inst2 = [i for p in r2["per_image"] for i in p["instances"]]
    assert [i["box_iou"] for i in inst2] == [i["box_iou"] for i in inst]  # same embeddings, same masks
    assert all(b["point_iou"] >= a["point_iou"] - 1e-9 for a, b in zip(inst, inst2))  # oracle >= best-score

    # --limit 1 and box prompts only
    r3, _ = run_ok(capsys, "coco-prompt", root, tmp_path / "o3", "--limit", "1", "--prompts", "box")
    assert r3["overall"]["images"] == 1 and "mIoU_point" not in r3["overall"] and r3["embedding_cache"] is None
