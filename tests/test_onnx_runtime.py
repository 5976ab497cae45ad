"""The torch-free runtime (repvit_sam.onnx_runtime): same masks as SamPredictor, without torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from conftest import TINY, randomize_
from repvit_sam import SamPredictor, build_from_config
from repvit_sam.export.onnx import export_onnx
from repvit_sam.inference.prompts import PromptError

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from repvit_sam.onnx_runtime import OnnxModelError, OnnxSamPredictor, resize_bilinear  # noqa: E402

# (tiny model, export options): the plain export, and the --preprocess --tensorrt-safe one
VARIANTS = {"repvit": {}, "vit_t": {"preprocess": True, "static_size": True}}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = {}
    for name, opts in VARIANTS.items():
        torch.manual_seed(0)
        model = randomize_(build_from_config(TINY[name]))
        d = tmp_path_factory.mktemp(f"rt_{name}")
        export_onnx(model, d, name=name, **opts)
        out[name] = (model, d)
    return out


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    # smooth blobs rather than noise, so that masks have real structure
    yy, xx = np.mgrid[0:150, 0:230]
    img = np.stack([128 + 100 * np.sin(xx / 17.0 + c) * np.cos(yy / 23.0 - c) for c in range(3)], -1)
    return np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)


def _cases(rng):
    return [
        dict(point_coords=np.array([[100, 50]]), point_labels=np.array([1])),
        dict(point_coords=np.array([[100, 50], [20, 130]]), point_labels=np.array([1, 0]), multimask_output=False),
        dict(box=np.array([10, 20, 200, 140])),
        dict(box=np.array([[10, 20, 200, 140], [0, 0, 50, 60]]), point_coords=np.array([[100, 50]]), point_labels=np.array([1])),
        dict(mask_input=rng.standard_normal((1, 64, 64)).astype(np.float32)),
        dict(point_coords=np.array([[30, 40]]), point_labels=np.array([1]), mask_input=rng.standard_normal((1, 64, 64)).astype(np.float32), return_logits=True),
    ]


def _assert_same(ref, got):
    (m_ref, s_ref, l_ref), (m_got, s_got, l_got) = ref, got
    assert m_got.shape == m_ref.shape and m_got.dtype == m_ref.dtype
    assert s_got.shape == s_ref.shape and l_got.shape == l_ref.shape
    if m_ref.dtype == bool:
        # masks agree pixel for pixel but for the odd logit within float noise of 0
        assert (m_ref != m_got).mean() < 1e-4
        union = (m_ref | m_got).sum()
        if union:
            assert (m_ref & m_got).sum() / union > 0.999
    else:
        np.testing.assert_allclose(m_got, m_ref, atol=1e-4 * max(1.0, np.abs(m_ref).max()), rtol=0)
    np.testing.assert_allclose(s_got, s_ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(l_got, l_ref, atol=1e-4 * max(1.0, np.abs(l_ref).max()), rtol=0)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_runtime_matches_predictor(exported, image, name):
    model, d = exported[name]
    ref = SamPredictor(model)
    ref.set_image(image)
    rt = OnnxSamPredictor(d, num_threads=1)
    rt.set_image(image)
    assert rt.original_size == ref.original_size and rt.input_size == ref.input_size
    emb = ref.features.numpy()
    np.testing.assert_allclose(rt.get_image_embedding(), emb, atol=1e-4 * np.abs(emb).max(), rtol=0)
    for case in _cases(np.random.default_rng(1)):
        _assert_same(ref.predict(**case), rt.predict(**case))
    # BGR input is flipped like the predictor does
    ref.set_image(image[..., ::-1], image_format="BGR")
    rt.set_image(image[..., ::-1], image_format="BGR")
    _assert_same(ref.predict(box=np.array([5, 5, 120, 100])), rt.predict(box=np.array([5, 5, 120, 100])))


_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["torch"] = None  # any 'import torch' now raises ImportError
    import numpy as np
    from repvit_sam.onnx_runtime import OnnxSamPredictor
    import repvit_sam
    folder, image_path, out_path = sys.argv[1:]
    p = OnnxSamPredictor(folder, num_threads=1)
    p.set_image(np.load(image_path))
    masks, scores, low = p.predict(point_coords=np.array([[100, 50]]), point_labels=np.array([1]))
    bmasks, bscores, _ = p.predict(box=np.array([10, 20, 200, 140]), multimask_output=False)
    assert sys.modules["torch"] is None
    loaded = sorted(m for m, v in sys.modules.items() if v is not None and (m == "torch" or m.startswith("torch.")))
    np.savez(out_path, masks=masks, scores=scores, low=low, bmasks=bmasks, bscores=bscores, loaded=np.array(loaded + ["-"]))
    print("version", repvit_sam.__version__)
    """
)


def test_runtime_runs_without_torch(exported, image, tmp_path):
    model, d = exported["repvit"]
    np.save(tmp_path / "image.npy", image)
    script = tmp_path / "no_torch.py"
    script.write_text(_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(d), str(tmp_path / "image.npy"), str(tmp_path / "out.npz")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "version 0.1.0" in proc.stdout
    out = np.load(tmp_path / "out.npz")
    assert list(out["loaded"]) == ["-"]  # nothing under torch.* was imported either
    ref = SamPredictor(model)
    ref.set_image(image)
    _assert_same(ref.predict(point_coords=np.array([[100, 50]]), point_labels=np.array([1])),
                 (out["masks"], out["scores"], out["low"]))
    bm, bs, _ = ref.predict(box=np.array([10, 20, 200, 140]), multimask_output=False)
    assert (bm != out["bmasks"]).mean() < 1e-4
    np.testing.assert_allclose(out["bscores"], bs, atol=1e-4, rtol=0)


def test_torch_free_import_reports_torch_names_clearly():
    """With torch blocked, the package imports and only torch-backed names fail, clearly."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import repvit_sam, repvit_sam.onnx_runtime\n"
        "try:\n    repvit_sam.SamPredictor\nexcept ImportError as e:\n    print('ImportError', e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ImportError") and "torch" in proc.stdout


@pytest.mark.parametrize("shape,out", [((2, 16, 16), (48, 40)), ((1, 50, 37), (13, 20)), ((3, 7, 9), (7, 9))])
def test_resize_bilinear_matches_torch(shape, out):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x)[None], out, mode="bilinear", align_corners=False)[0].numpy()
    np.testing.assert_allclose(resize_bilinear(x, *out), ref, atol=1e-5, rtol=0)


def test_errors(exported, image, tmp_path):
    _, d = exported["repvit"]
    with pytest.raises(OnnxModelError, match="metadata.json not found"):
        OnnxSamPredictor(tmp_path)
    (tmp_path / "metadata.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(OnnxModelError, match="not a repvit-sam ONNX export"):
        OnnxSamPredictor(tmp_path)
    rt = OnnxSamPredictor(d)
    with pytest.raises(RuntimeError, match=r"set_image\(\.\.\.\) before predict"):
        rt.predict(point_coords=[[1, 1]], point_labels=[1])
    with pytest.raises(ValueError, match=r"float.*\[0, 1\]"):  # the predictor's conversion rules and message
        rt.set_image(image.astype(np.float64))
    with pytest.raises(ValueError, match="image_format"):
        rt.set_image(image, image_format="HSV")
    rt.set_image(image)
    with pytest.raises(PromptError, match="outside the 230x150 image"):
        rt.predict(point_coords=[[500, 1]], point_labels=[1])
    with pytest.raises(PromptError, match="no prompt given"):
        rt.predict()
    with pytest.raises(PromptError, match="mask_input must be low-res logits of shape"):
        rt.predict(point_coords=[[1, 1]], point_labels=[1], mask_input=np.zeros((1, 256, 256)))


def test_runtime_accepts_the_predictors_arrays(exported, image):
    """16-bit, grey, float-in-[0, 1] and RGBA arrays are converted as SamPredictor converts them."""
    _, d = exported["repvit"]
    rt = OnnxSamPredictor(d, num_threads=1)
    rt.set_image(image)
    base = rt.get_image_embedding().copy()
    alpha = np.dstack([image, np.full(image.shape[:2], 7, np.uint8)])
    for variant in (image.astype(np.uint16) << 8 | 0x5A, image.astype(np.float32) / 255.0, alpha):
        rt.set_image(variant)
        np.testing.assert_allclose(rt.get_image_embedding(), base, rtol=0, atol=1e-5)
    grey = image[..., 1]
    rt.set_image(grey)
    g = rt.get_image_embedding().copy()
    rt.set_image(np.repeat(grey[..., None], 3, axis=2))
    np.testing.assert_array_equal(rt.get_image_embedding(), g)
