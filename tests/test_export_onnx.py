"""ONNX export: the graphs' interface, ONNX Runtime against PyTorch, the TensorRT-safe variant,
metadata, atomic writes and the `repvit-sam export onnx` command."""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
import pytest
import torch

from conftest import TINY, randomize_
from repvit_sam import build_from_config
from repvit_sam.cli import main
from repvit_sam.export.onnx import DECODER_INPUTS, DECODER_OUTPUTS, ExportError, export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Each tiny model, exported once (plain), with its PyTorch model."""
    out = {}
    for name in sorted(TINY):
        torch.manual_seed(0)
        model = randomize_(build_from_config(TINY[name]))
        d = tmp_path_factory.mktemp(f"onnx_{name}")
        out[name] = (model, export_onnx(model, d, name=name))
    return out


def _reference(model, emb, coords, labels, box, mask, orig):
    """The PyTorch computation the decoder graph stands for: all 4 mask tokens, upscaled.
    Clicks as SamPredictor passes them (the prompt encoder adds the padding point itself)."""
    from repvit_sam.inference.transforms import ResizeLongestSide

    input_size = ResizeLongestSide.get_preprocess_shape(*orig, model.img_size)
    with torch.no_grad():
        points = (torch.as_tensor(coords, dtype=torch.float)[None], torch.as_tensor(labels)[None]) if coords is not None else None
        boxes = torch.as_tensor(box, dtype=torch.float)[None] if box is not None else None
        masks = torch.as_tensor(mask)[None] if mask is not None else None
        sparse, dense = model.prompt_encoder(points, boxes, masks)
        low, iou = model.mask_decoder.predict_masks(torch.from_numpy(emb), model.prompt_encoder.get_dense_pe(), sparse, dense)
        up = model.postprocess_masks(low, input_size, orig)
    return up.numpy(), iou.numpy(), low.numpy()


def _decoder_feeds(coords, labels, mask, orig, emb):
    e = emb.shape[-1]
    return {
        "image_embeddings": emb,
        "point_coords": np.asarray(coords, np.float32)[None],
        "point_labels": np.asarray(labels, np.float32)[None],
        "mask_input": np.zeros((1, 1, 4 * e, 4 * e), np.float32) if mask is None else mask[None].astype(np.float32),
        "has_mask_input": np.array([0.0 if mask is None else 1.0], np.float32),
        "orig_im_size": np.array(orig, np.float32),
    }


def test_interface(exports):
    model, paths = exports["repvit"]
    dec = onnx.load(str(paths["decoder"]))
    assert max(o.version for o in dec.opset_import if o.domain in ("", "ai.onnx")) >= 17
    ins = {i.name: i for i in dec.graph.input}
    assert [i.name for i in dec.graph.input] == list(DECODER_INPUTS)
    assert [o.name for o in dec.graph.output] == list(DECODER_OUTPUTS)

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    assert dims(ins["image_embeddings"]) == [1, 32, 16, 16]
    assert dims(ins["point_coords"]) == [1, "num_points", 2]
    assert dims(ins["point_labels"]) == [1, "num_points"]
    assert dims(ins["mask_input"]) == [1, 1, 64, 64]
    assert dims(ins["has_mask_input"]) == [1] and dims(ins["orig_im_size"]) == [2]
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in dec.graph.input)
    outs = {o.name: dims(o) for o in dec.graph.output}
    assert outs == {"masks": [1, 4, "height", "width"], "iou_predictions": [1, 4], "low_res_masks": [1, 4, 64, 64]}
    enc = onnx.load(str(paths["encoder"]))
    assert [i.name for i in enc.graph.input] == ["image"] and dims(enc.graph.input[0]) == [1, 3, 256, 256]
    assert [o.name for o in enc.graph.output] == ["image_embeddings"]


@pytest.mark.parametrize("name", sorted(TINY))
def test_encoder_matches_pytorch(exports, name):
    model, paths = exports[name]
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model.image_encoder(x).numpy()
    got = _session(paths["encoder"]).run(None, {"image": x.numpy()})[0]
    assert got.shape == ref.shape == (1, 32, 16, 16)
    np.testing.assert_allclose(got, ref, atol=1e-4 * np.abs(ref).max(), rtol=0)


@pytest.mark.parametrize("name", sorted(TINY))
def test_decoder_matches_pytorch(exports, name):
    """Clicks (2 and 5 points: the point axis is dynamic), a box with a click, a mask input;
    outputs at two original sizes (the crop and resize depend on orig_im_size)."""
    model, paths = exports[name]
    sess = _session(paths["decoder"])
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((1, 32, 16, 16)).astype(np.float32)
    mask = rng.standard_normal((1, 64, 64)).astype(np.float32)
    cases = [
        # (clicks, labels, box, mask, orig size)
        (rng.uniform(0, 256, (1, 2)), [1], None, None, (192, 256)),
        (rng.uniform(0, 256, (4, 2)), [1, 0, 1, 1], None, mask, (300, 211)),
        (rng.uniform(0, 256, (1, 2)), [0], np.array([20.0, 30.0, 180.0, 150.0]), None, (256, 256)),
    ]
    for clicks, labels, box, m, orig in cases:
        ref = _reference(model, emb, clicks, labels, box, m, orig)  # pads itself when there is no box
        if box is None:
            coords, lab = np.concatenate([clicks, [[0, 0]]]), labels + [-1]
        else:
            coords, lab = np.concatenate([clicks, box.reshape(2, 2)]), labels + [2, 3]
        got = sess.run(None, _decoder_feeds(coords, lab, m, orig, emb))
        assert got[0].shape == (1, 4, *orig)
        for g, r in zip(got, ref):
            assert g.shape == r.shape
            np.testing.assert_allclose(g, r, atol=1e-4 * max(1.0, np.abs(r).max()), rtol=0)
    # without the padding point the prompt means something else: the graph must see it
    clicks = np.array([[50.0, 60.0]])
    padded = sess.run(None, _decoder_feeds(np.concatenate([clicks, [[0, 0]]]), [1, -1], None, (256, 256), emb))[1]
    unpadded = sess.run(None, _decoder_feeds(clicks, [1], None, (256, 256), emb))[1]
    assert not np.allclose(padded, unpadded)


def test_tensorrt_safe_variant(tmp_path):
    torch.manual_seed(0)
    model = randomize_(build_from_config(TINY["vit_t"]))
    paths = export_onnx(model, tmp_path, name="vit_t", static_size=True, encoder=False)
    assert "encoder" not in paths and not (tmp_path / "encoder.onnx").exists()
    graph = onnx.load(str(paths["decoder"])).graph
    ops = {n.op_type for n in graph.node}
    assert not ops & {"Loop", "If", "Scan", "NonZero", "SequenceConstruct", "Unique"}, ops
    for n in graph.node:  # TensorRT has no float64
        for a in n.attribute:
            if n.op_type == "Cast" and a.name == "to":
                assert a.i != onnx.TensorProto.DOUBLE
    assert all(t.data_type != onnx.TensorProto.DOUBLE for t in graph.initializer)
    for o in graph.output:  # static output sizes
        assert all(d.dim_value > 0 for d in o.type.tensor_type.shape.dim), o
    assert [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim] == [1, 4, 256, 256]
    assert [i.name for i in graph.input] == list(DECODER_INPUTS)

    rng = np.random.default_rng(3)
    emb = rng.standard_normal((1, 32, 16, 16)).astype(np.float32)
    coords, labels = np.array([[40.0, 70.0], [0.0, 0.0]]), [1, -1]
    got = _session(paths["decoder"]).run(None, _decoder_feeds(coords, labels, None, (100, 300), emb))
    _, iou, low = _reference(model, emb, coords[:1], labels[:1], None, None, (100, 300))
    with torch.no_grad():
        up = torch.nn.functional.interpolate(torch.from_numpy(low), (256, 256), mode="bilinear", align_corners=False).numpy()
    np.testing.assert_allclose(got[0], up, atol=1e-4 * np.abs(up).max(), rtol=0)
    np.testing.assert_allclose(got[1], iou, atol=1e-5, rtol=0)


def test_preprocess_encoder(tmp_path):
    """--preprocess: RGB 0..255 of any (h, w) with long side S in, normalised and padded inside."""
    torch.manual_seed(0)
    model = randomize_(build_from_config(TINY["repvit"]))
    paths = export_onnx(model, tmp_path, name="repvit", preprocess=True, decoder=False)
    sess = _session(paths["encoder"])
    for h, w in ((256, 170), (99, 256)):
        x = torch.randint(0, 256, (1, 3, h, w)).float()
        with torch.no_grad():
            ref = model.image_encoder(model.preprocess(x)).numpy()
        got = sess.run(None, {"image": x.numpy()})[0]
        np.testing.assert_allclose(got, ref, atol=1e-4 * np.abs(ref).max(), rtol=0)
    meta = json.loads(paths["metadata"].read_text())
    assert meta["encoder_preprocess"] is True and meta["files"] == {"encoder": "encoder.onnx"}


def test_metadata_and_checkpoint_hash(tmp_path):
    torch.manual_seed(0)
    model = randomize_(build_from_config(TINY["repvit"]))
    ckpt = tmp_path / "w.pt"
    torch.save(model.state_dict(), ckpt)
    paths = export_onnx(model, tmp_path / "out", name="tiny", checkpoint=ckpt, opset=18, decoder=False)
    meta = json.loads(paths["metadata"].read_text())
    assert meta["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert meta["checkpoint"] == "w.pt" and meta["model"] == "tiny" and meta["opset"] == 18
    assert meta["img_size"] == 256 and meta["pixel_mean"] == [123.675, 116.28, 103.53]
    assert meta["pixel_std"] == [58.395, 57.12, 57.375] and meta["low_res_size"] == [64, 64]
    assert max(o.version for o in onnx.load(str(paths["encoder"])).opset_import if o.domain in ("", "ai.onnx")) == 18


def test_failed_export_leaves_old_files(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = randomize_(build_from_config(TINY["repvit"]))
    (tmp_path / "decoder.onnx").write_bytes(b"old decoder")
    (tmp_path / "metadata.json").write_text("{}")

    def broken(*a, **k):
        raise RuntimeError("checker says no")

    monkeypatch.setattr(onnx.checker, "check_model", broken)
    with pytest.raises(RuntimeError, match="checker says no"):
        export_onnx(model, tmp_path, name="repvit", encoder=False)
    assert (tmp_path / "decoder.onnx").read_bytes() == b"old decoder"
    assert (tmp_path / "metadata.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["decoder.onnx", "metadata.json"]  # no temp folder left


def test_bad_options_and_missing_dependency(tmp_path, monkeypatch):
    model = build_from_config(TINY["repvit"])
    with pytest.raises(ExportError, match="opset must be >= 17"):
        export_onnx(model, tmp_path, name="x", opset=16)
    with pytest.raises(ExportError, match="nothing to export"):
        export_onnx(model, tmp_path, name="x", encoder=False, decoder=False)
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ExportError, match=r"onnx is not installed: pip install 'repvit-sam\[export\]'"):
        export_onnx(model, tmp_path, name="x")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def vit_t_ckpt(tmp_path_factory):
    import repvit_sam

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "random_vit_t.pt"
    torch.save(repvit_sam.build_sam("vit_t").state_dict(), path)
    return path


def test_cli_export_onnx(tmp_path, vit_t_ckpt, capsys):
    out = tmp_path / "exp"
    code = main(["export", "onnx", "--checkpoint", str(vit_t_ckpt), "--only", "decoder", "--tensorrt-safe", "-o", str(out)])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert "exporting the prompt decoder" in err  # progress on stderr
    assert sorted(p.name for p in out.iterdir()) == ["decoder.onnx", "metadata.json"]
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["model"] == "vit_t" and meta["decoder_static_size"] is True and meta["img_size"] == 1024
    assert meta["checkpoint_sha256"] == hashlib.sha256(vit_t_ckpt.read_bytes()).hexdigest()
    sess = _session(out / "decoder.onnx")
    assert [o.shape for o in sess.get_outputs()] == [[1, 4, 1024, 1024], [1, 4], [1, 4, 256, 256]]


@pytest.mark.parametrize(
    "argv,match,code",
    [
        (["export", "onnx", "--model", "nope", "-o", "x"], "unknown model 'nope'", 2),
        (["export", "onnx", "--checkpoint", "/no/such.pt", "-o", "x"], "--checkpoint: file not found", 2),
        (["export", "onnx", "--opset", "16", "-o", "x"], "--opset must be 17 or more", 2),
        (["export", "coreml", "--max-points", "1", "-o", "x"], "--max-points must be 2 or more", 2),
        (["export", "tensorrt", "-o", "x"], "invalid choice: 'tensorrt'", 2),  # tflite is a format now (issue 16)
    ],
)
def test_cli_errors(argv, match, code, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == code
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()
