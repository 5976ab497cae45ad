"""`repvit-sam eval coco-ap` end to end and its score rules (evaluation/tasks/coco_ap.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from repvit_sam.evaluation.cache import CachedPredictor
from repvit_sam.evaluation.datasets import load_coco
from repvit_sam.inference.masks import mask_to_rle
from repvit_sam.inference.predictor import SamPredictor

from eval_data import *  # noqa: F401,F403  (fixtures tiny / hooked and the dataset writers)


def test_coco_ap_end_to_end(tmp_path, tiny, hooked, capsys):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    root = tmp_path / "coco"
    data = make_coco(root)
    dets = make_detections(tmp_path / "dets.json", data)
    r, _ = run_ok(capsys, "coco-ap", root, tmp_path / "o", "--detections", tmp_path / "dets.json")
    assert r["protocol"]["score_rule"] == "detector" and r["protocol"]["max_dets_per_image"] == 100
    assert [p["detections"] for p in r["per_image"]] == [3, 1]

    # the same AP computed directly: plain predictor + pycocotools
    pred = SamPredictor(tiny)
    res = []
    for iid in (1, 2):
        pred.set_image(np.array(Image.open(root / "val2017" / f"{iid:012d}.jpg").convert("RGB")))
        for d in (d for d in dets if d["image_id"] == iid):
            x, y, w, h = d["bbox"]
            m, _, _ = pred.predict(box=np.array([x, y, x + w, y + h], float), multimask_output=False)
            res.append({"image_id": iid, "category_id": d["category_id"], "segmentation": mask_to_rle(m[0]), "score": d["score"]})
    gt = COCO()
    gt.dataset = json.loads((root / "annotations" / "instances_val2017.json").read_text())
    gt.createIndex()
    ev = COCOeval(gt, gt.loadRes(res), "segm")
    ev.params.imgIds = [1, 2]
    ev.evaluate(), ev.accumulate(), ev.summarize()
    assert r["overall"]["AP"] == pytest.approx(ev.stats[0] * 100)
    assert r["overall"]["AP_S"] == pytest.approx(ev.stats[3] * 100)
    assert "| AP | AP50 | AP75 | AP_S | AP_M | AP_L |" in (tmp_path / "o" / "results.md").read_text()


def test_coco_ap_seginw_mean(tmp_path, hooked, capsys):
    root = tmp_path / "seginw"
    det_dir = tmp_path / "dets"
    det_dir.mkdir()
    for name in ("Airplane-Parts", "Bottles"):
        make_coco(tmp_path / "src" / name)
        valid = root / name / "valid"
        valid.mkdir(parents=True)
        data = json.loads((tmp_path / "src" / name / "annotations" / "instances_val2017.json").read_text())
        for f in (tmp_path / "src" / name / "val2017").iterdir():
            f.rename(valid / f.name)
        (valid / "_annotations_min1cat.coco.json").write_text(json.dumps(data))
        make_detections(det_dir / f"{name}.json", data, extra=name == "Bottles")
    r, _ = run_ok(capsys, "coco-ap", root, tmp_path / "o", "--seginw", "--detections", det_dir)
    per = r["overall"]["per_dataset"]
    assert sorted(per) == ["Airplane-Parts", "Bottles"]
    assert r["overall"]["mean_AP"] == pytest.approx((per["Airplane-Parts"]["AP"] + per["Bottles"]["AP"]) / 2)
    assert "| mean over datasets |" in (tmp_path / "o" / "results.md").read_text()


# ------------------------------------------------------------------------------ bsds-edge


def test_coco_ap_score_rules(tmp_path, tiny):
    from repvit_sam.evaluation.tasks.coco_ap import segment_detections

    root = tmp_path / "coco"
    data = make_coco(root)
    make_detections(tmp_path / "d.json", data, extra=False)
    ds = load_coco(root / "annotations" / "instances_val2017.json", root / "val2017", limit=1)
    p = CachedPredictor(tiny, None)
    det, _ = segment_detections(p, ds, tmp_path / "d.json", score_rule="detector", show_progress=False)
    both, _ = segment_detections(p, ds, tmp_path / "d.json", score_rule="detector*iou", show_progress=False)
    assert [r["score"] for r in det] == pytest.approx([0.9, 0.8])  # the detector's scores, highest first
    ref = SamPredictor(tiny)
    ref.set_image(np.array(Image.open(root / "val2017" / "000000000001.jpg").convert("RGB")))
    for r_det, r_both, box in zip(det, both, ([5, 6, 25, 30], [35, 10, 60, 40])):
        _, s, _ = ref.predict(box=np.array(box, float), multimask_output=False)
        assert r_both["score"] == pytest.approx(r_det["score"] * float(s[0]), rel=1e-5)
    assert segment_detections(p, ds, tmp_path / "d.json", max_dets=1, show_progress=False)[1][0]["detections"] == 1
    with pytest.raises(ValueError, match="unknown score rule"):
        segment_detections(p, ds, tmp_path / "d.json", score_rule="max")
