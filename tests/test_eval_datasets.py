"""Evaluation dataset readers (evaluation/datasets.py): annotation formats, and one-line errors
for every broken layout.
"""

from __future__ import annotations


import numpy as np
import pytest

from repvit_sam.evaluation.datasets import ann_to_mask, load_coco

from eval_data import *  # noqa: F401,F403  (fixtures tiny / hooked and the dataset writers)


def test_ann_to_mask_formats_and_lvis_names(tmp_path):
    data = make_coco(tmp_path / "lvis", lvis=True)
    ds = load_coco(tmp_path / "lvis" / "annotations" / "lvis_v1_val.json", tmp_path / "lvis" / "val2017")
    assert [im.path.name for im in ds.images] == ["000000000001.jpg", "000000000002.jpg"]  # image 3: no annotation
    assert all(a["iscrowd"] == 0 for a in ds.data["annotations"])  # filled in for pycocotools
    rle, poly, _, unc = make_coco(tmp_path / "coco")["annotations"]
    np.testing.assert_array_equal(ann_to_mask(rle, 48, 64), rect(48, 64, 5, 6, 25, 30))
    np.testing.assert_array_equal(ann_to_mask(unc, 56, 40), rect(56, 40, 8, 12, 32, 44))
    pm = ann_to_mask(poly, 48, 64)
    assert pm[12:38, 37:58].all() and not pm[:8].any() and abs(int(pm.sum()) - 750) < 60
    assert data["annotations"][0]["segmentation"] == rle["segmentation"]


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_bad_datasets_give_one_line_errors(tmp_path, hooked, capsys, case):
    argv = prep_broken(tmp_path, case)
    code, out, err = run(["eval", *argv, "--no-cache", "--no-progress", "--out", tmp_path / "out"], capsys)
    assert code in (1, 2)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and BROKEN[case] in lines[0], err
    assert hooked.calls == 0  # the layout is checked before anything runs
    assert not (tmp_path / "out" / "results.json").exists()
