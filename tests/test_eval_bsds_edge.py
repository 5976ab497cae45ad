"""`repvit-sam eval bsds-edge` (evaluation/tasks/bsds_edge.py).
"""

from __future__ import annotations


import numpy as np
from PIL import Image


from eval_data import *  # noqa: F401,F403  (fixtures tiny / hooked and the dataset writers)


def test_edge_band_keeps_only_the_outer_boundary():
    from repvit_sam.evaluation.tasks.bsds_edge import _mask_edges

    mask = rect(30, 30, 5, 5, 25, 25)
    mask[12:18, 12:18] = False  # a hole: its rim is not the outer boundary
    e = _mask_edges(mask.astype(float), mask)
    assert e[12:18, 12:18].max() == 0 and e[10:20, 10:20].max() == 0
    assert e[5, 10:20].min() > 0 and e[4, 10:20].min() > 0  # both sides of the outer boundary
    assert e[:, :3].max() == 0 and e[15, 8] == 0  # away from the boundary


def test_bsds_edge_end_to_end(tmp_path, hooked, capsys):
    root = tmp_path / "BSDS500" / "data"
    make_bsds(root)
    # a 4 x 4 grid keeps the test fast on 2 shared cores (the protocol's default is 16 x 16)
    r, out = run_ok(capsys, "bsds-edge", root, tmp_path / "o", "--points-per-side", "4")
    assert [p["name"] for p in r["per_image"]] == ["100", "101"] and r["per_image"][0]["annotators"] == 2
    ov = r["overall"]
    for k in ("ODS", "OIS", "AP", "R50"):
        assert 0.0 <= ov[k] <= 1.0
    assert 0 < ov["ODS_threshold"] < 1
    assert r["protocol"]["grid"].startswith("4x4 foreground points")
    edge = np.array(Image.open(tmp_path / "o" / "maps" / "100.png"))
    assert edge.shape == (40, 56) and edge.dtype == np.uint8
    assert out.startswith("| | ODS | OIS | AP | R50 |")  # nothing else on stdout (pyEdgeEval prints at import)


# ------------------------------------------------------------------------------ duts-sod / mvtec-ad
