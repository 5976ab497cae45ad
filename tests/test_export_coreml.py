"""Core ML export: the packages' inputs, outputs, shapes, dtypes and precision, read from the
spec with coremltools (running a package needs macOS, so nothing is run here)."""

from __future__ import annotations

import json
import sys
from collections import Counter

import pytest
import torch

from conftest import TINY, randomize_
from repvit_sam import build_from_config
from repvit_sam.cli import main
from repvit_sam.export.onnx import DECODER_INPUTS, DECODER_OUTPUTS, ExportError

ct = pytest.importorskip("coremltools")
from repvit_sam.export.coreml import export_coreml  # noqa: E402

FLOAT32 = ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32
MIL = ct.proto.MIL_pb2.DataType


def _io(spec, which):
    """{name: (shape, dtype, size ranges)} of the spec's inputs or outputs."""
    out = {}
    for f in getattr(spec.description, which):
        a = f.type.multiArrayType
        out[f.name] = (list(a.shape), a.dataType, [(r.lowerBound, r.upperBound) for r in a.shapeRange.sizeRanges])
    return out


def _const_dtypes(spec) -> Counter:
    fn = spec.mlProgram.functions["main"]
    ops = fn.block_specializations[fn.opset].operations
    return Counter(MIL.Name(o.type.tensorType.dataType) for op in ops if op.type == "const" for o in op.outputs)


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    torch.manual_seed(0)
    model = randomize_(build_from_config(TINY["repvit"]))
    return export_coreml(model, tmp_path_factory.mktemp("coreml"), name="tiny_repvit", max_points=8)


def test_encoder_package(packages):
    spec = ct.utils.load_spec(str(packages["encoder"]))
    assert spec.WhichOneof("Type") == "mlProgram"
    assert _io(spec, "input") == {"image": ([1, 3, 256, 256], FLOAT32, [])}
    assert _io(spec, "output") == {"image_embeddings": ([1, 32, 16, 16], FLOAT32, [])}
    consts = _const_dtypes(spec)
    assert consts["FLOAT16"] > 10 * consts["FLOAT32"]  # fp16 weights by default


def test_decoder_package(packages):
    spec = ct.utils.load_spec(str(packages["decoder"]))
    ins = _io(spec, "input")
    assert list(ins) == list(DECODER_INPUTS)
    assert ins["image_embeddings"] == ([1, 32, 16, 16], FLOAT32, [])
    assert ins["point_coords"][2] == [(1, 1), (1, 8), (2, 2)]  # 1..max_points points
    assert ins["point_labels"][2] == [(1, 1), (1, 8)]
    assert ins["mask_input"] == ([1, 1, 64, 64], FLOAT32, [])
    assert ins["has_mask_input"][:2] == ([1], FLOAT32) and ins["orig_im_size"][:2] == ([2], FLOAT32)
    outs = _io(spec, "output")
    assert list(outs) == list(DECODER_OUTPUTS)
    assert [outs[n][:2] for n in DECODER_OUTPUTS] == [([1, 4, 256, 256], FLOAT32), ([1, 4], FLOAT32), ([1, 4, 64, 64], FLOAT32)]
    assert _const_dtypes(spec)["FLOAT16"] > 0
    meta = json.loads(packages["metadata"].read_text())
    assert meta["format"] == "repvit-sam-coreml" and meta["precision"] == "fp16" and meta["max_points"] == 8
    assert meta["img_size"] == 256 and meta["low_res_size"] == [64, 64] and meta["decoder_static_size"] is True
    assert meta["files"] == {"encoder": "encoder.mlpackage", "decoder": "decoder.mlpackage"}


def test_bad_options_and_missing_dependency(tmp_path, monkeypatch):
    model = build_from_config(TINY["repvit"])
    with pytest.raises(ExportError, match="precision must be one of fp16, fp32"):
        export_coreml(model, tmp_path, name="x", precision="int4")
    with pytest.raises(ExportError, match="max_points must be >= 2"):
        export_coreml(model, tmp_path, name="x", max_points=1)
    monkeypatch.setitem(sys.modules, "coremltools", None)
    with pytest.raises(ExportError, match=r"coremltools is not installed: pip install 'repvit-sam\[export\]'"):
        export_coreml(model, tmp_path, name="x")
    assert list(tmp_path.iterdir()) == []


def test_cli_export_coreml_fp32_decoder(tmp_path, capsys):
    import repvit_sam

    torch.manual_seed(0)
    ckpt = tmp_path / "random_vit_t.pt"
    torch.save(repvit_sam.build_sam("vit_t").state_dict(), ckpt)
    out = tmp_path / "ml"
    code = main(["export", "coreml", "--checkpoint", str(ckpt), "--only", "decoder", "--precision", "fp32", "-o", str(out)])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert "converting the prompt decoder" in err
    assert sorted(p.name for p in out.iterdir()) == ["coreml_metadata.json", "decoder.mlpackage"]
    spec = ct.utils.load_spec(str(out / "decoder.mlpackage"))
    assert _io(spec, "output")["masks"][:2] == ([1, 4, 1024, 1024], FLOAT32)
    assert _io(spec, "input")["image_embeddings"][0] == [1, 256, 64, 64]
    assert _const_dtypes(spec)["FLOAT16"] == 0  # fp32 all through
    meta = json.loads((out / "coreml_metadata.json").read_text())
    assert meta["model"] == "vit_t" and meta["precision"] == "fp32" and len(meta["checkpoint_sha256"]) == 64
