"""`repvit-sam eval duts-sod` and `mvtec-ad` (evaluation/tasks/duts_sod.py, mvtec_ad.py): their
mask-voting rules by hand, then end to end.
"""

from __future__ import annotations


import numpy as np
import pytest
from PIL import Image


from eval_data import *  # noqa: F401,F403  (fixtures tiny / hooked and the dataset writers)


def test_saliency_and_anomaly_rules_by_hand():
    from repvit_sam.evaluation.tasks.duts_sod import border_fraction, saliency_map
    from repvit_sam.evaluation.tasks.mvtec_ad import anomaly_map

    h = w = 20
    centre = rect(h, w, 5, 5, 15, 15)  # 100 px, no border
    side = rect(h, w, 0, 0, 20, 4)  # 80 px, whole top row + 3 px of each side column ...
    tiny_blob = rect(h, w, 8, 17, 9, 18)  # 1 px (0.25% of the image)
    corner = rect(h, w, 0, 5, 2, 7)  # touches the border a little
    assert border_fraction(side) == pytest.approx((20 + 2 * 3) / 76)
    recs = [{"segmentation": m, "area": int(m.sum()), "predicted_iou": s} for m, s in
            ((centre, 0.8), (side, 0.99), (tiny_blob, 0.9), (corner, 0.5))]
    sal = saliency_map(recs, (h, w), max_border=0.2, min_area=0.005)
    b = border_fraction(corner)  # 2 of 76 border pixels
    votes = {"centre": 0.8, "corner": 0.5 * (1 - b / 0.2)}
    assert sal[10, 10] == pytest.approx(1.0)  # the largest vote, normalised
    assert sal[6, 0] == pytest.approx(votes["corner"] / votes["centre"])
    assert sal[0, 10] == 0 and sal[17, 8] == 0  # background (border) and clutter (too small) dropped
    amap = anomaly_map(recs, (h, w), max_area=0.1)  # 40 px max: centre and side are "object"
    assert amap[10, 10] == 0 and amap[0, 10] == 0
    assert amap[17, 8] == pytest.approx(0.9 * (1 - (1 / 400) / 0.1))
    assert amap[6, 1] == pytest.approx(0.5 * (1 - (4 / 400) / 0.1))


def test_duts_sod_end_to_end(tmp_path, hooked, capsys):
    from repvit_sam.evaluation.metrics import mae

    root = tmp_path / "DUTS-TE"
    make_duts(root)
    r, _ = run_ok(capsys, "duts-sod", root, tmp_path / "o", "--points-per-side", "4")
    assert [p["name"] for p in r["per_image"]] == ["ILSVRC_0", "ILSVRC_1"]
    gt = rect(48, 48, 14, 12, 34, 36)
    sal = np.array(Image.open(tmp_path / "o" / "maps" / "ILSVRC_0.png")) / 255.0
    assert r["per_image"][0]["MAE"] == pytest.approx(mae(sal, gt), abs=1 / 255)
    assert r["overall"]["MAE"] == pytest.approx(np.mean([p["MAE"] for p in r["per_image"]]))
    assert 0 <= r["overall"]["S_measure"] <= 1 and 0 <= r["overall"]["max_F"] <= 1
    assert "points_per_side=4" in r["protocol"]["masks"]


def test_mvtec_ad_end_to_end(tmp_path, hooked, capsys):
    root = tmp_path / "mvtec"
    make_mvtec(root)
    r, _ = run_ok(capsys, "mvtec-ad", root, tmp_path / "o", "--points-per-side", "4")
    assert sorted(r["overall"]["per_category"]) == ["bottle", "grid"]
    assert r["overall"]["pixel_max_F1"] == pytest.approx(np.mean(list(r["overall"]["per_category"].values())))
    assert [p["anomalous"] for p in r["per_image"]] == [True, False, True, False]  # broken/ before good/
    assert (tmp_path / "o" / "maps" / "bottle" / "broken_000.png").is_file()
    r2, _ = run_ok(capsys, "mvtec-ad", root, tmp_path / "o2", "--categories", "grid", "--points-per-side", "2", "--no-maps")
    assert list(r2["overall"]["per_category"]) == ["grid"]
    assert not (tmp_path / "o2" / "maps").exists()


# ------------------------------------------------------------------------------ errors
