"""Fast encoder backends on a trained model (the committed tiny RepViT student) keep its masks:
mask IoU against fp32 eager for box prompts on held-out synthetic images. bf16, ONNX Runtime and
OpenVINO must reach 0.98; the int8 figure (NNCF, calibrated on 32 other synthetic scenes) is
reported (xfail with the figure when below 0.98)."""

from __future__ import annotations

import numpy as np
import pytest

from repvit_sam import SamPredictor
from repvit_sam.backends import available_backends
from repvit_sam.evaluation.datasets import ann_to_mask
from repvit_sam.io import load_image

from conftest import int8_calibrated_on_scenes

AVAILABLE = available_backends()
IMAGES = 5


def _boxes_and_images(held_out):
    import json

    data = json.loads((held_out / "annotations.json").read_text())
    out = []
    for info in data["images"][:IMAGES]:
        anns = [a for a in data["annotations"] if a["image_id"] == info["id"]]
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns], float)
        gts = [ann_to_mask(a, info["height"], info["width"]) for a in anns]
        out.append((load_image(held_out / "images" / info["file_name"]), boxes, gts))
    return out


@pytest.fixture(scope="module")
def reference(trained_student, synthetic_held_out):
    cases = _boxes_and_images(synthetic_held_out)
    p = SamPredictor(trained_student)
    masks = []
    for image, boxes, _ in cases:
        p.set_image(image)
        masks.append(p.predict(box=boxes, multimask_output=False)[0][:, 0])
    return cases, masks


def _agreement(model, backend, cases, ref_masks, tmp_path):
    if backend == "int8":  # calibrated on scenes like the ones it segments, as a user would
        p = SamPredictor(int8_calibrated_on_scenes(model, backend, tmp_path))
    else:
        p = SamPredictor(model, backend=backend)
    ious = []
    for (image, boxes, _), ref in zip(cases, ref_masks):
        p.set_image(image)
        got = p.predict(box=boxes, multimask_output=False)[0][:, 0]
        for a, b in zip(got, ref):
            union = (a | b).sum()
            ious.append(1.0 if union == 0 else (a & b).sum() / union)
    return float(np.mean(ious))


def test_reference_masks_mean_something(reference):
    cases, masks = reference
    ious = [(m & g).sum() / max((m | g).sum(), 1) for (_, _, gts), ms in zip(cases, masks) for m, g in zip(ms, gts)]
    assert np.mean(ious) > 0.4  # the trained student's masks, not noise


@pytest.mark.parametrize("backend", ["bf16", "onnxruntime", "openvino", "int8"])
def test_backend_keeps_the_masks(trained_student, reference, backend, tmp_path):
    if AVAILABLE.get(backend) is not None:
        pytest.skip(AVAILABLE[backend])
    cases, masks = reference
    iou = _agreement(trained_student, backend, cases, masks, tmp_path)
    print(f"{backend}: mask IoU vs fp32 eager {iou:.4f} ({sum(len(m) for m in masks)} box prompts)")
    if backend == "int8":
        assert iou > 0.8, f"int8 mask IoU vs fp32 {iou:.3f}"
        if iou < 0.98:
            pytest.xfail(f"int8 mask IoU vs fp32 {iou:.3f} < 0.98")
    assert iou >= 0.98, f"{backend} mask IoU vs fp32 {iou:.4f}"
