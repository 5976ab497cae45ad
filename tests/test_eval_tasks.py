"""`repvit-sam eval` end to end on tiny datasets written here in each benchmark's on-disk format.

Model loading: the CLI's ``repvit_sam.cli.load_model`` is replaced (monkeypatch) by one returning
a tiny random-weight RepViT-SAM (tests/conftest.py TINY, 256-pixel input): the official
checkpoints are ~100 MB-2.5 GB and a tiny config has no registry name to detect from a file.
Loading real checkpoints is covered by tests/test_cli.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY, randomize_
from repvit_sam import build_from_config, fuse_model
from repvit_sam.cli import main
from repvit_sam.evaluation.cache import CachedPredictor, EmbeddingCache, weights_hash
from repvit_sam.evaluation.datasets import ann_to_mask, load_coco
from repvit_sam.inference.masks import mask_to_rle
from repvit_sam.inference.predictor import SamPredictor

# ------------------------------------------------------------------------------ model + hook


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return fuse_model(randomize_(build_from_config(TINY["repvit"]), seed=3), inplace=True)


class EncoderCounter:
    def __init__(self, model):
        self.calls = 0
        self.handle = model.image_encoder.register_forward_hook(self._hook)

    def _hook(self, *_):
        self.calls += 1


@pytest.fixture
def hooked(tiny, monkeypatch):
    """Route the CLI's model loading to the tiny model; count image-encoder calls."""
    import repvit_sam.cli as cli

    monkeypatch.setattr(cli, "load_model", lambda args: (tiny, "tiny_repvit"))
    counter = EncoderCounter(tiny)
    yield counter
    counter.handle.remove()


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------------ fixtures


def _photo(h: int, w: int, seed: int, boxes) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = (rng.random((h, w, 3)) * 40 + 20).astype(np.uint8)
    for (x0, y0, x1, y1), colour in boxes:
        img[y0:y1, x0:x1] = colour
    return img


def _rect(h, w, x0, y0, x1, y1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def make_coco(root, lvis=False):
    """COCO layout: ROOT/annotations/instances_val2017.json + ROOT/val2017/*.jpg (LVIS: coco_url
    names the file, no iscrowd). Image 1: two objects (RLE, polygon) and a crowd region;
    image 2: one object (uncompressed RLE); image 3: no annotation."""
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    specs = {
        1: (48, 64, [((5, 6, 25, 30), (220, 40, 40)), ((35, 10, 60, 40), (40, 200, 60))]),
        2: (56, 40, [((8, 12, 32, 44), (230, 230, 30))]),
        3: (40, 40, []),
    }
    images, anns = [], []
    for iid, (h, w, boxes) in specs.items():
        name = f"{iid:012d}.jpg"
        Image.fromarray(_photo(h, w, iid, boxes)).save(root / "val2017" / name, quality=95)
        info = {"id": iid, "height": h, "width": w}
        if lvis:
            info["coco_url"] = f"http://images.example.org/val2017/{name}"
        else:
            info["file_name"] = name
        images.append(info)
    a = _rect(48, 64, 5, 6, 25, 30)
    anns.append({"id": 1, "image_id": 1, "category_id": 1, "segmentation": mask_to_rle(a), "area": int(a.sum()), "bbox": [5, 6, 20, 24]})
    anns.append({"id": 2, "image_id": 1, "category_id": 2, "segmentation": [[35, 10, 60, 10, 60, 40, 35, 40]], "area": 750.0, "bbox": [35, 10, 25, 30]})
    anns.append({"id": 3, "image_id": 1, "category_id": 1, "segmentation": mask_to_rle(_rect(48, 64, 0, 40, 10, 48)), "area": 80, "bbox": [0, 40, 10, 8], "iscrowd": 1})
    c = _rect(56, 40, 8, 12, 32, 44)
    flat = c.flatten(order="F").astype(np.int64)
    change = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    anns.append({"id": 4, "image_id": 2, "category_id": 1, "segmentation": {"size": [56, 40], "counts": counts}, "area": int(c.sum()), "bbox": [8, 12, 24, 32]})
    if lvis:
        for x in anns:
            x.pop("iscrowd", None)
        anns = [x for x in anns if x["id"] != 3]
    else:
        for x in anns:
            x.setdefault("iscrowd", 0)
    data = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    name = "lvis_v1_val.json" if lvis else "instances_val2017.json"
    (root / "annotations" / name).write_text(json.dumps(data))
    return data


def make_detections(path, data, extra=True):
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9 - 0.1 * i}
            for i, a in enumerate(data["annotations"]) if not a.get("iscrowd")]
    if extra:
        dets.append({"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.3})
        dets.append({"image_id": 999, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.3})  # not in the JSON: ignored
    path.write_text(json.dumps(dets))
    return dets


def make_bsds(root, split="test", n=2):
    from scipy.io import savemat

    (root / "images" / split).mkdir(parents=True)
    (root / "groundTruth" / split).mkdir(parents=True)
    for i in range(n):
        h, w = 40, 56
        img = _photo(h, w, 10 + i, [((10, 8, 40, 30), (200, 200, 200))])
        Image.fromarray(img).save(root / "images" / split / f"{100 + i}.jpg", quality=95)
        seg = np.ones((h, w), np.uint16)
        seg[8:30, 10:40] = 2
        bnd = np.zeros((h, w), np.uint8)
        bnd[8, 10:40] = bnd[29, 10:40] = 1
        bnd[8:30, 10] = bnd[8:30, 39] = 1
        cell = np.empty((1, 2), dtype=object)
        cell[0, 0] = {"Segmentation": seg, "Boundaries": bnd}
        cell[0, 1] = {"Segmentation": seg, "Boundaries": np.roll(bnd, 1, axis=1)}
        savemat(root / "groundTruth" / split / f"{100 + i}.mat", {"groundTruth": cell})


def make_duts(root, n=2):
    (root / "DUTS-TE-Image").mkdir(parents=True)
    (root / "DUTS-TE-Mask").mkdir(parents=True)
    for i in range(n):
        img = _photo(48, 48, 20 + i, [((14, 12, 34, 36), (240, 60, 60))])
        Image.fromarray(img).save(root / "DUTS-TE-Image" / f"ILSVRC_{i}.jpg", quality=95)
        Image.fromarray(_rect(48, 48, 14, 12, 34, 36).astype(np.uint8) * 255).save(root / "DUTS-TE-Mask" / f"ILSVRC_{i}.png")


def make_mvtec(root, cats=("bottle", "grid")):
    for c in cats:
        for defect in ("good", "broken"):
            (root / c / "test" / defect).mkdir(parents=True)
        (root / c / "ground_truth" / "broken").mkdir(parents=True)
        Image.fromarray(_photo(40, 40, 30, [((5, 5, 35, 35), (120, 120, 120))])).save(root / c / "test" / "good" / "000.png")
        Image.fromarray(_photo(40, 40, 31, [((5, 5, 35, 35), (120, 120, 120)), ((15, 15, 20, 22), (10, 10, 10))])).save(root / c / "test" / "broken" / "000.png")
        Image.fromarray(_rect(40, 40, 15, 15, 20, 22).astype(np.uint8) * 255).save(root / c / "ground_truth" / "broken" / "000_mask.png")


def results(out):
    return json.loads((out / "results.json").read_text())


def run_ok(capsys, task, root, out, *extra):
    """Run ``eval TASK`` without cache or progress bars; assert success; (results.json, stdout)."""
    code, stdout, err = run(["eval", task, "--data", root, *extra, "--no-cache", "--no-progress", "--out", out], capsys)
    assert code == 0, err
    return results(out), stdout


# ------------------------------------------------------------------------------ coco-prompt


def test_ann_to_mask_formats_and_lvis_names(tmp_path):
    data = make_coco(tmp_path / "lvis", lvis=True)
    ds = load_coco(tmp_path / "lvis" / "annotations" / "lvis_v1_val.json", tmp_path / "lvis" / "val2017")
    assert [im.path.name for im in ds.images] == ["000000000001.jpg", "000000000002.jpg"]  # image 3: no annotation
    assert all(a["iscrowd"] == 0 for a in ds.data["annotations"])  # filled in for pycocotools
    rle, poly, _, unc = make_coco(tmp_path / "coco")["annotations"]
    np.testing.assert_array_equal(ann_to_mask(rle, 48, 64), _rect(48, 64, 5, 6, 25, 30))
    np.testing.assert_array_equal(ann_to_mask(unc, 56, 40), _rect(56, 40, 8, 12, 32, 44))
    pm = ann_to_mask(poly, 48, 64)
    assert pm[12:38, 37:58].all() and not pm[:8].any() and abs(int(pm.sum()) - 750) < 60
    assert data["annotations"][0]["segmentation"] == rle["segmentation"]


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
    gt = _rect(48, 64, 5, 6, 25, 30)
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


def test_cache_survives_a_corrupt_entry(tmp_path, tiny):
    cache = EmbeddingCache(tmp_path, "tiny", weights_hash(tiny))
    img = _photo(30, 50, 0, [])
    p = CachedPredictor(tiny, cache)
    p.set_image(img)
    ref = p.features.clone()
    entry = next(cache.dir.glob("*.pt"))
    entry.write_bytes(b"not a torch file")
    q = CachedPredictor(tiny, cache)
    q.set_image(img)
    assert cache.misses == 2 and cache.hits == 0
    q.set_image(img)
    assert cache.hits == 1 and q.original_size == (30, 50) and q.input_size == p.input_size
    torch.testing.assert_close(q.features, ref)
    # a different image is a different key
    assert cache.image_key(img, 256) != cache.image_key(img[::-1].copy(), 256)
    assert cache.image_key(img, 256) != cache.image_key(img, 1024)


# ------------------------------------------------------------------------------ coco-ap


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


def test_edge_band_keeps_only_the_outer_boundary():
    from repvit_sam.evaluation.tasks.bsds_edge import _mask_edges

    mask = _rect(30, 30, 5, 5, 25, 25)
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


def test_saliency_and_anomaly_rules_by_hand():
    from repvit_sam.evaluation.tasks.duts_sod import border_fraction, saliency_map
    from repvit_sam.evaluation.tasks.mvtec_ad import anomaly_map

    h = w = 20
    centre = _rect(h, w, 5, 5, 15, 15)  # 100 px, no border
    side = _rect(h, w, 0, 0, 20, 4)  # 80 px, whole top row + 3 px of each side column ...
    tiny_blob = _rect(h, w, 8, 17, 9, 18)  # 1 px (0.25% of the image)
    corner = _rect(h, w, 0, 5, 2, 7)  # touches the border a little
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
    gt = _rect(48, 48, 14, 12, 34, 36)
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


def _prep_broken(tmp_path, case):
    """Build a dataset with one defect; return the CLI args."""
    d = tmp_path / case
    if case == "missing-root":
        return ["coco-prompt", "--data", d]
    if case == "no-annotations":
        d.mkdir()
        return ["coco-prompt", "--data", d]
    if case == "bad-json":
        make_coco(d)
        (d / "annotations" / "instances_val2017.json").write_text("{not json")
        return ["coco-prompt", "--data", d]
    if case == "not-instances":
        make_coco(d)
        (d / "annotations" / "instances_val2017.json").write_text(json.dumps({"images": []}))
        return ["coco-prompt", "--data", d]
    if case == "missing-image":
        make_coco(d)
        (d / "val2017" / "000000000002.jpg").unlink()
        return ["coco-prompt", "--data", d]
    if case == "no-annotated-images":
        make_coco(d)
        p = d / "annotations" / "instances_val2017.json"
        data = json.loads(p.read_text())
        data["annotations"] = []
        p.write_text(json.dumps(data))
        return ["coco-prompt", "--data", d]
    if case == "bad-detections":
        data = make_coco(d)
        (tmp_path / "dets.json").write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 1, 1]}]))
        return ["coco-ap", "--data", d, "--detections", tmp_path / "dets.json"]
    if case == "missing-detections":
        make_coco(d)
        return ["coco-ap", "--data", d, "--detections", tmp_path / "nope.json"]
    if case == "seginw-empty":
        d.mkdir()
        (tmp_path / "dets").mkdir()
        return ["coco-ap", "--seginw", "--data", d, "--detections", tmp_path / "dets"]
    if case == "bsds-no-gt":
        make_bsds(d)
        import shutil

        shutil.rmtree(d / "groundTruth")
        return ["bsds-edge", "--data", d]
    if case == "bsds-missing-mat":
        make_bsds(d)
        (d / "groundTruth" / "test" / "101.mat").unlink()
        return ["bsds-edge", "--data", d]
    if case == "bsds-bad-mat":
        make_bsds(d)
        from scipy.io import savemat

        savemat(d / "groundTruth" / "test" / "100.mat", {"something": np.zeros(3)})
        return ["bsds-edge", "--data", d, "--limit", "1"]
    if case == "duts-empty":
        (d / "DUTS-TE-Image").mkdir(parents=True)
        (d / "DUTS-TE-Mask").mkdir()
        return ["duts-sod", "--data", d]
    if case == "duts-missing-mask":
        make_duts(d)
        (d / "DUTS-TE-Mask" / "ILSVRC_1.png").unlink()
        return ["duts-sod", "--data", d]
    if case == "mvtec-missing-mask":
        make_mvtec(d, cats=("bottle",))
        (d / "bottle" / "ground_truth" / "broken" / "000_mask.png").unlink()
        return ["mvtec-ad", "--data", d]
    if case == "mvtec-unknown-category":
        make_mvtec(d, cats=("bottle",))
        return ["mvtec-ad", "--data", d, "--categories", "bottle,carpet"]
    if case == "mvtec-wrong-layout":
        (d / "bottle" / "train").mkdir(parents=True)
        return ["mvtec-ad", "--data", d]
    raise AssertionError(case)


BROKEN = {
    "missing-root": "dataset root (--data) not found",
    "no-annotations": "no instances JSON under",
    "bad-json": "is not valid JSON",
    "not-instances": "needs 'images' and 'annotations' lists",
    "missing-image": "image 000000000002.jpg of instances_val2017.json not found in",
    "no-annotated-images": "has no annotated images to evaluate",
    "bad-detections": "detection #0 needs image_id, category_id, bbox",
    "missing-detections": "--detections: not found",
    "seginw-empty": "no SegInW dataset folders under",
    "bsds-no-gt": "BSDS500 groundTruth/test folder not found",
    "bsds-missing-mat": "101.mat missing for image 101.jpg",
    "bsds-bad-mat": "is not a BSDS500 ground-truth file",
    "duts-empty": "no .jpg images in",
    "duts-missing-mask": "ILSVRC_1.png missing for image ILSVRC_1.jpg",
    "mvtec-missing-mask": "ground-truth mask",
    "mvtec-unknown-category": "categories not found under",
    "mvtec-wrong-layout": "no MVTec-AD categories under",
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_bad_datasets_give_one_line_errors(tmp_path, hooked, capsys, case):
    argv = _prep_broken(tmp_path, case)
    code, out, err = run(["eval", *argv, "--no-cache", "--no-progress", "--out", tmp_path / "out"], capsys)
    assert code in (1, 2)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and BROKEN[case] in lines[0], err
    assert hooked.calls == 0  # the layout is checked before anything runs
    assert not (tmp_path / "out" / "results.json").exists()


def test_usage_errors(tmp_path, hooked, capsys):
    make_coco(tmp_path / "c")
    for argv, msg in (
        (["eval"], "eval: name a TASK"),
        (["eval", "coco-prompt", "--data", tmp_path / "c", "--prompts", "box,scribble"], "--prompts takes box and/or point"),
        (["eval", "coco-prompt", "--data", tmp_path / "c", "--prompts", "box", "--refine", "2"], "--refine needs point prompts"),
        (["eval", "coco-prompt", "--data", tmp_path / "c", "--limit", "0"], "expected a positive integer"),
        (["eval", "bsds-edge", "--data", tmp_path / "c", "--nms", "1.5"], "expected a number in (0, 1]"),
        (["eval", "frobnicate", "--data", tmp_path / "c"], "invalid choice"),
    ):
        code, _, err = run(argv, capsys)
        assert code == 2 and msg in err, (argv, err)


def test_missing_optional_dependency_names_the_extra():
    from repvit_sam.evaluation.metrics import require

    with pytest.raises(ImportError, match=r"surely_not_a_module_xyz is not installed \(this evaluation needs it\): pip install 'repvit-sam\[eval\]'"):
        require("surely_not_a_module_xyz")


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
