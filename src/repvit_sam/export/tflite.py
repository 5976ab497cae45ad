"""LiteRT (TFLite) export through litert-torch: ``encoder.tflite`` and ``decoder.tflite`` plus
``metadata.json``, with the interfaces of :mod:`.mobile` (the same as the ExecuTorch files).
LiteRT's interpreter runs them on its default XNNPACK delegate.

``quantize``: ``None`` (fp32), ``"fp16"`` (weights stored as float16 by ai-edge-quantizer and
widened when loaded; XNNPACK computes in fp32 on x86 and may use fp16 arithmetic
on ARM) or ``"int8"`` (encoder: static int8 by ai-edge-quantizer, per-channel int8 weights and int8
activations whose ranges come from running the float model on a folder of images or on
scikit-image's sample photos; the decoder stays fp32).

Inputs and outputs are named as in the interface (``image``, ``image_embeddings``, ...), in the
model's default signature. Conversion imports ``litert_torch`` (the ``mobile`` extra) inside the
functions.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..modeling.sam import Sam
from .manifest import MOBILE_DECODER_INPUTS, MOBILE_DECODER_OUTPUTS
from .mobile import (
    DEFAULT_MAX_POINTS, MobileImageEncoder, MobilePromptDecoder, check_common_options, decoder_example, encoder_example,
    package_version, write_mobile_export,
)
from .onnx import ExportError, check_parts, require

FORMAT = "repvit-sam-tflite"
ENCODER_FILE = "encoder.tflite"
DECODER_FILE = "decoder.tflite"
QUANTIZE = (None, "fp16", "int8")
MOBILE_EXTRA = "mobile"
# Bumped whenever the same model and calibration would export to a different file, so that files
# cached by an older version (mobile_backends, --cache-dir) are not reused: 2 = int8 GELU, SQRT
# and DIV kept float (INT8_FLOAT_OPS).
EXPORT_REVISION = 2


class _Named(nn.Module):
    """``module`` with keyword inputs and a dict of named outputs: LiteRT's signature then
    carries the interface's names instead of ``args_0`` / ``output_0``."""

    def __init__(self, module: nn.Module, outputs: Sequence[str]) -> None:
        super().__init__()
        self.module = module
        self.outputs = tuple(outputs)

    def forward(self, **inputs: torch.Tensor) -> Dict[str, torch.Tensor]:
        out = self.module(*inputs.values())
        out = out if isinstance(out, tuple) else (out,)
        return dict(zip(self.outputs, out))


@contextlib.contextmanager
def _quiet() -> Any:
    """litert-torch prints a progress line per conversion step; keep stdout for our own lines."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def convert(module: nn.Module, inputs: Dict[str, torch.Tensor], outputs: Sequence[str], quant_config: Any = None) -> bytes:
    """``module`` (called with ``inputs``' values in order) converted by litert-torch; the
    ``.tflite`` bytes."""
    litert_torch = require("litert_torch", MOBILE_EXTRA)
    named = _Named(module, outputs)
    named.training = False  # not .eval(): a quantised GraphModule refuses train / eval switches
    with _quiet(), torch.no_grad():
        edge = litert_torch.convert(named, sample_kwargs=inputs, quant_config=quant_config)
        return bytes(edge.model_content())


def _requantize(data: bytes, tmp: Path, configure: Callable[[Any, Any], None], calibration: Optional[List[Dict[str, Any]]] = None) -> bytes:
    """``data`` (an fp32 ``.tflite``) through ai-edge-quantizer: ``configure(quantizer, (algorithm_manager,
    qtyping))`` sets the recipe; ``calibration`` (signature inputs, numpy) runs the float model for ranges."""
    qz = require("ai_edge_quantizer", MOBILE_EXTRA)
    from ai_edge_quantizer import algorithm_manager, qtyping

    src, dst = tmp / "float.tflite", tmp / "quantized.tflite"
    src.write_bytes(data)
    with _quiet():
        q = qz.quantizer.Quantizer(str(src))
        configure(q, (algorithm_manager, qtyping))
        result = combine_ranges([q.calibrate({"serving_default": [feed]}, num_threads=1) for feed in calibration]) if calibration else None
        q.quantize(result).export_model(str(dst), overwrite=True)
    return dst.read_bytes()


def combine_ranges(per_image: Sequence[Dict[str, Dict[str, Any]]]) -> Dict[str, Dict[str, Any]]:
    """One calibration result from one per image: each tensor's range is the smallest ``min``
    and the largest ``max`` any image gave (element-wise, so per-channel ranges stay so).

    ai-edge-quantizer's own ``calibrate`` on a list of images folds each image into a moving
    average with weight 0.05, so the first image keeps 0.95^(n-1) of the range (46% after 16
    images) and the ranges depend on the images' order; activations of the other images beyond
    it are clipped. This matches what the XNNPACK quantizer of the ExecuTorch path observes (all
    calibration images, in any order). Measured on the trained tiny model (docs/mobile.md): int8
    mask IoU against fp32 0.897 -> 0.954 with 32 calibration images."""
    import numpy as np

    if not per_image:
        return {}
    out: Dict[str, Dict[str, Any]] = {}
    for name, first in per_image[0].items():
        unknown = set(first) - {"min", "max", "num_samples"}
        if unknown:
            raise ExportError(f"int8 calibration: unexpected statistics {sorted(unknown)} for tensor {name!r} "
                              "(this ai-edge-quantizer recipe is not min/max; pin the mobile extra's versions)")
        stats = [r[name] for r in per_image if name in r]
        out[name] = {"min": np.minimum.reduce([np.asarray(r["min"]) for r in stats]),
                     "max": np.maximum.reduce([np.asarray(r["max"]) for r in stats])}
        if "num_samples" in first:
            out[name]["num_samples"] = sum(int(r.get("num_samples", 1)) for r in stats)
    return out


def _fp16(data: bytes, tmp: Path) -> bytes:
    """Weights stored as float16 (ai-edge-quantizer's float casting), widened when loaded."""

    def configure(q: Any, mods: Any) -> None:
        algorithms, qtyping = mods
        q.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                 algorithm_key=algorithms.AlgorithmName.FLOAT_CASTING)

    return _requantize(data, tmp, configure)


#: Ops the int8 encoder keeps in float between int8 neighbours. XNNPACK's LiteRT delegate takes
#: no int8 GELU, SQRT or DIV, so each one cut the delegated graph: the fused RepViT-SAM encoder
#: ran as 114 XNNPACK partitions with TFLite's own kernels between them. As float ops between a
#: DEQUANTIZE and a QUANTIZE they are delegated (57 partitions) and compute the same values (an
#: int8 GELU is a table of quantize(gelu(dequantize(x)))): embedding cosine against fp32 0.998421
#: either way, 0.51x -> 0.43x of fp32's time at 1024^2 in one interleaved run (docs/mobile.md).
INT8_FLOAT_OPS = ("GELU", "SQRT", "DIV")


def _int8(data: bytes, tmp: Path, calibration: List[Dict[str, Any]]) -> bytes:
    """Static int8 (per-channel int8 weights, int8 activations) with ranges from running the
    float model on ``calibration``: ai-edge-quantizer's ``static_wi8_ai8`` recipe, with the ops of
    ``INT8_FLOAT_OPS`` left in float. (litert-torch 0.10's own PT2E path fails on this encoder: its
    layout pass breaks LayerNorm2d's quantised channel mean.)"""
    from ai_edge_quantizer import recipe

    def configure(q: Any, mods: Any) -> None:
        algorithms, qtyping = mods
        q.load_quantization_recipe(recipe.static_wi8_ai8())
        for op in INT8_FLOAT_OPS:
            q.update_quantization_recipe(".*", getattr(qtyping.TFLOperationName, op), algorithm_key=algorithms.AlgorithmName.NO_QUANTIZE)

    return _requantize(data, tmp, configure, calibration)


def _encoder_inputs(preprocess: bool, example: Tuple[torch.Tensor, ...]) -> Dict[str, torch.Tensor]:
    return dict(zip(("image", "image_size") if preprocess else ("image",), example))


def model_bytes(module: nn.Module, inputs: Dict[str, torch.Tensor], outputs: Sequence[str], quantize: Optional[str] = None,
                calibration: Optional[Sequence[Sequence[torch.Tensor]]] = None, tmp: Optional[Path] = None,
                log: Callable[[str], None] = lambda _m: None) -> bytes:
    """``module`` as ``.tflite`` bytes: fp32, "fp16" (float16 weights) or "int8" (static, ranges
    from ``calibration``: input tuples in ``inputs``' order). ``tmp``: where scratch files go
    (default: the system's temporary folder)."""
    if quantize == "int8" and not calibration:
        raise ExportError("int8: the calibration set is empty")
    data = convert(module, inputs, outputs)
    if quantize is None:
        return data
    import tempfile

    with tempfile.TemporaryDirectory(dir=tmp) as scratch:
        if quantize == "fp16":
            return _fp16(data, Path(scratch))
        feeds = [{k: v.numpy() for k, v in zip(inputs, c)} for c in calibration or []]
        log(f"int8: calibrating on {len(feeds)} image(s)")
        return _int8(data, Path(scratch), feeds)


def encoder_model(model: Sam, *, preprocess: bool = False, quantize: Optional[str] = None,
                  calibration: Optional[Sequence[Sequence[torch.Tensor]]] = None, tmp: Optional[Path] = None,
                  log: Callable[[str], None] = lambda _m: None) -> bytes:
    """The image encoder as ``.tflite`` bytes (see :func:`model_bytes`)."""
    enc = MobileImageEncoder(model, preprocess=preprocess).eval()
    inputs = _encoder_inputs(preprocess, encoder_example(model, preprocess))
    return model_bytes(enc, inputs, ["image_embeddings"], quantize, calibration, tmp, log)


def decoder_model(model: Sam, max_points: int = DEFAULT_MAX_POINTS, fp16: bool = False, tmp: Optional[Path] = None) -> bytes:
    dec = MobilePromptDecoder(model, max_points).eval()
    inputs = dict(zip(MOBILE_DECODER_INPUTS, decoder_example(model, max_points)))
    return model_bytes(dec, inputs, MOBILE_DECODER_OUTPUTS, "fp16" if fp16 else None, tmp=tmp)


def check_options(quantize: Optional[str], calibration: Optional[os.PathLike], max_points: int) -> None:
    """One-line ExportError for options the LiteRT export cannot honour."""
    if quantize not in QUANTIZE:
        raise ExportError(f"tflite: --quantize {quantize} is not supported; choose fp16 or int8")
    check_common_options(quantize, calibration, max_points)


def export_tflite(
    model: Sam,
    out_dir: os.PathLike,
    *,
    name: str,
    checkpoint: Optional[os.PathLike] = None,
    quantize: Optional[str] = None,
    calibration: Optional[os.PathLike] = None,
    preprocess: bool = False,
    max_points: int = DEFAULT_MAX_POINTS,
    encoder: bool = True,
    decoder: bool = True,
    log: Optional[Callable[[str], None]] = None,
) -> Dict[str, Path]:
    """Write ``encoder.tflite``, ``decoder.tflite`` and ``metadata.json`` into ``out_dir``
    (atomically, metadata last). Returns the paths written, by key."""
    check_options(quantize, calibration, max_points)
    check_parts(encoder, decoder)
    require("litert_torch", MOBILE_EXTRA)
    model = model.eval().cpu().float()
    return write_mobile_export(
        model, out_dir, runtime="litert", fmt=FORMAT, files=(ENCODER_FILE, DECODER_FILE),
        encoder_bytes=(lambda calib, tmp, say: encoder_model(model, preprocess=preprocess, quantize=quantize, calibration=calib,
                                                             tmp=tmp, log=say)) if encoder else None,
        decoder_bytes=(lambda tmp: decoder_model(model, max_points, fp16=quantize == "fp16", tmp=tmp)) if decoder else None,
        messages=(f"LiteRT: converting the image encoder{f' ({quantize})' if quantize else ''}", "LiteRT: converting the prompt decoder"),
        exporter=f"torch {torch.__version__} -> litert-torch {package_version('litert-torch')}",
        name=name, checkpoint=checkpoint, quantize=quantize, calibration=calibration, preprocess=preprocess, log=log,
        max_points=max_points)
