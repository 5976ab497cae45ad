"""Image-encoder backends: every backend that can run here gives eager's embedding within its
precision's tolerance; errors name the choices or the package to install; the exported
backends handle batches, other input sizes and their export cache; CUDA paths skip without a GPU."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

import repvit_sam.backends as backends
from repvit_sam import build_from_config
from repvit_sam.backends import BACKENDS, INFO, MOBILE_BACKENDS, BackendError, available_backends, calibration_images, prepare_encoder
from repvit_sam.inference.predictor import SamPredictor

from conftest import TINY, randomize_

AVAILABLE = available_backends()
NO_CUDA = "needs a CUDA GPU (torch.cuda.is_available() is False on this machine)"

# (minimum cosine similarity, maximum relative error) against eager, by precision. int8 on a tiny
# random-weight model: activations are far from what a trained model's look like, so looser.
TOLERANCE = {"fp32": (1 - 1e-9, 1e-5), "bf16": (0.999, 3e-2), "fp16": (0.999, 1e-2), "int8": (0.98, 0.25)}

# Every CPU backend on tiny RepViT (the model this package is about); the exported ones on the
# transformer encoders too (their graphs have attention, reshapes and relative positions).
# (The on-device backends are tested in tests/test_mobile.py, which shares their slow exports.)
CASES = [("repvit", b) for b in BACKENDS if INFO[b].device == "cpu" and b not in ("eager", "compile", *MOBILE_BACKENDS)]
CASES += [(m, b) for m in ("vit_t", "vit_b") for b in ("onnxruntime", "openvino", "openvino-bf16")] + [("vit_t", "int8")]


def _skip_unavailable(backend: str) -> None:
    if AVAILABLE[backend] is not None:
        pytest.skip(AVAILABLE[backend])


def _metrics(out: torch.Tensor, ref: torch.Tensor):
    a, b = out.double().flatten(), ref.double().flatten()
    return float(a @ b / (a.norm() * b.norm())), float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def tiny_encoders():
    encoders = {}
    for name in ("repvit", "vit_t", "vit_b"):
        torch.manual_seed(0)
        encoders[name] = randomize_(build_from_config(TINY[name])).image_encoder
    return encoders


@pytest.fixture(scope="module")
def export_cache(tmp_path_factory):
    """One export folder for the module: onnxruntime, openvino and int8 share each model's export."""
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("model_name,backend", CASES, ids=[f"{m}-{b}" for m, b in CASES])
def test_backend_matches_eager(tiny_encoders, export_cache, x, model_name, backend):
    _skip_unavailable(backend)
    encoder = tiny_encoders[model_name]
    with torch.no_grad():
        ref = encoder(x)
        out = prepare_encoder(encoder, backend, cache_dir=export_cache)(x)
    assert out.shape == ref.shape and out.dtype == torch.float32 and out.device == x.device
    cosine, rel = _metrics(out, ref)
    min_cos, max_rel = TOLERANCE[INFO[backend].precision]
    assert cosine >= min_cos and rel <= max_rel, f"{backend}: cosine {cosine:.6f}, relative error {rel:.2e}"
    if INFO[backend].precision != "fp32":  # it really runs in lower precision
        assert rel > 1e-6


def test_eager_is_the_module_itself_and_others_leave_it_untouched(tiny_encoders):
    encoder = tiny_encoders["repvit"]
    assert prepare_encoder(encoder, "eager") is encoder
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    prepare_encoder(encoder, "bf16")
    after = encoder.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert any(isinstance(m, nn.BatchNorm2d) for m in encoder.modules())  # fusing worked on a copy


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # inside inductor
def test_compile_backend_matches_eager():
    """torch.compile on a small conv net (compiling a whole encoder takes ~1 min on 2 cores)."""
    _skip_unavailable("compile")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.GELU(), nn.Conv2d(8, 4, 1)).eval()
    randomize_(net)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        out = prepare_encoder(net, "compile")(x)
        ref = net(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_available_backends_covers_every_name_with_reasons():
    assert tuple(AVAILABLE) == BACKENDS
    for name in ("eager", "fused", "fused-cl", "bf16"):  # plain torch: always runnable
        assert AVAILABLE[name] is None
    for name in BACKENDS:
        if INFO[name].device == "cuda" and not torch.cuda.is_available():
            assert "CUDA" in AVAILABLE[name] and "\n" not in AVAILABLE[name]


def test_unknown_backend_names_the_choices(tiny_encoders):
    with pytest.raises(BackendError, match=r"unknown backend 'tensorrt'; choose from eager, fused, .*openvino-bf16, int8"):
        prepare_encoder(tiny_encoders["repvit"], "tensorrt")
    with pytest.raises(BackendError, match="unknown backend"):
        backends.unavailable_reason("tensorrt")


def test_missing_package_is_one_line_naming_the_extra(tiny_encoders, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now fails
    reasons = available_backends()
    for name in ("openvino", "openvino-bf16", "int8"):
        assert reasons[name] == f"backend {name!r} needs openvino: pip install 'repvit-sam[fast]'"
    with pytest.raises(BackendError) as err:
        prepare_encoder(tiny_encoders["repvit"], "openvino")
    assert str(err.value) == "backend 'openvino' needs openvino: pip install 'repvit-sam[fast]'"


def test_exported_backend_batches_other_sizes_and_bad_input(tiny_encoders, export_cache):
    _skip_unavailable("onnxruntime")
    encoder = tiny_encoders["repvit"]  # fully convolutional: any multiple of 16 works
    encode = prepare_encoder(encoder, "onnxruntime", cache_dir=export_cache)
    x = torch.randn(3, 3, 192, 256, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        batch = encode(x)
        ref = encoder(x)
        singles = torch.cat([encode(x[i : i + 1]) for i in range(3)])
    assert batch.shape == (3, 32, 12, 16)
    torch.testing.assert_close(batch, singles, rtol=0, atol=0)  # a batch is its images one by one
    torch.testing.assert_close(batch, ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"expects a \(B, 3, H, W\) image tensor, got \(1, 4, 256, 256\)"):
        encode(torch.zeros(1, 4, 256, 256))


def test_export_is_cached_by_weights_and_shape(tiny_encoders, tmp_path, monkeypatch):
    _skip_unavailable("onnxruntime")
    calls = []
    real = backends._export_encoder_onnx
    monkeypatch.setattr(backends, "_export_encoder_onnx", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    encoder = tiny_encoders["repvit"]
    prepare_encoder(encoder, "onnxruntime", cache_dir=tmp_path)
    prepare_encoder(encoder, "onnxruntime", cache_dir=tmp_path)  # same weights, same size: reused
    assert calls == [(1, 3, 256, 256)]
    other = randomize_(build_from_config(TINY["repvit"]), seed=5).image_encoder
    prepare_encoder(other, "onnxruntime", cache_dir=tmp_path)  # other weights: a new export
    assert len(calls) == 2 and len(list(tmp_path.glob("encoder-*.onnx"))) == 2
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind


def test_int8_calibration_options(tiny_encoders, export_cache, x):
    _skip_unavailable("int8")
    encoder = tiny_encoders["repvit"]
    with pytest.raises(BackendError, match="calibration set is empty"):
        prepare_encoder(encoder, "int8", cache_dir=export_cache, calibration=[])
    calib = [torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    encode = prepare_encoder(encoder, "int8", cache_dir=export_cache, calibration=calib)
    assert len(list(export_cache.glob("*-int8-*.xml"))) >= 1
    with torch.no_grad():
        cosine, _ = _metrics(encode(x), encoder(x))
    assert cosine >= TOLERANCE["int8"][0]


def test_calibration_images_look_like_preprocessed_photos():
    imgs = calibration_images(64, count=3, seed=0)
    assert len(imgs) == 3 and all(i.shape == (1, 3, 64, 64) and i.dtype == np.float32 for i in imgs)
    for img in imgs:  # pixel values in [0, 255] normalised with SAM's mean/std
        assert img.min() >= (0 - 123.675) / 58.395 - 1e-4 and img.max() <= (255 - 103.53) / 57.375 + 1e-4
        assert img.std() > 0.3  # not flat
    padded = [int((np.abs(i[0]).sum(axis=(0, 2)) == 0).sum()) for i in imgs]  # zero rows at the bottom
    assert all(0 <= p <= 64 * 0.44 + 1 for p in padded)
    np.testing.assert_array_equal(imgs[0], calibration_images(64, count=1, seed=0)[0])  # deterministic
    assert not np.array_equal(imgs[0], imgs[1])


def test_predictor_runs_on_an_exported_backend(tiny_encoders):
    _skip_unavailable("openvino")
    torch.manual_seed(0)
    model = randomize_(build_from_config(TINY["repvit"]))
    image = np.random.default_rng(0).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    plain, fast = SamPredictor(model), SamPredictor(model, backend="openvino")
    plain.set_image(image)
    fast.set_image(image)
    torch.testing.assert_close(fast.get_image_embedding(), plain.get_image_embedding(), rtol=1e-4, atol=1e-5)
    point = np.array([[100.0, 60.0]])
    m1, s1, _ = plain.predict(point, np.array([1]))
    m2, s2, _ = fast.predict(point, np.array([1]))
    np.testing.assert_allclose(s2, s1, rtol=1e-4, atol=1e-5)
    assert (m1 != m2).mean() < 1e-3


# ---------------------------------------------------------------------------- CUDA
CUDA_BACKENDS = [b for b in BACKENDS if INFO[b].device == "cuda"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
@pytest.mark.parametrize("backend", CUDA_BACKENDS)
def test_cuda_backend_matches_eager(tiny_encoders, x, backend):
    encoder = tiny_encoders["repvit"]
    encode = prepare_encoder(encoder, backend)
    with torch.no_grad():
        ref = encoder(x)
        out = encode(x)  # CPU in, CPU out
        out_gpu = encode(x.cuda())  # GPU in, GPU out
    assert out.device == x.device and out_gpu.device.type == "cuda" and out.dtype == torch.float32
    cosine, rel = _metrics(out, ref)
    min_cos, max_rel = TOLERANCE[INFO[backend].precision]
    # fp32 on a GPU may use TF32 convolutions (cuDNN's default): 10-bit mantissas, so about 1e-3
    # relative error and a cosine of 1 - 1e-7 (0.99999987 on an H200), not fp32's 1 - 1e-9
    assert cosine >= min(min_cos, 0.99999) and rel <= max(max_rel, 1e-3)
    torch.testing.assert_close(out_gpu.cpu(), out, rtol=1e-3, atol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_cuda_graph_replays_new_inputs(tiny_encoders):
    """The captured graph reads a static buffer: each call must see its own input."""
    encoder = tiny_encoders["repvit"]
    encode = prepare_encoder(encoder, "cuda-graphs")
    a, b = torch.randn(1, 3, 256, 256), torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        out_a, out_b = encode(a), encode(b)
        ref_a, ref_b = encoder(a), encoder(b)
    assert _metrics(out_a, ref_a)[0] > 0.999 and _metrics(out_b, ref_b)[0] > 0.999
    assert not torch.allclose(out_a, out_b)
