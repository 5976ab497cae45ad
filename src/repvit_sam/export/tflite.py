"""LiteRT (TFLite) export through litert-torch: ``encoder.tflite`` and ``decoder.tflite`` plus
``metadata.json``, with the interfaces of :mod:`.mobile` (the same as the ExecuTorch files).
LiteRT's interpreter runs them on its default XNNPACK delegate.

``quantize``: ``None`` (fp32), ``"fp16"`` (weights stored as float16 by ai-edge-quantizer and
widened when loaded: half the file; XNNPACK computes in fp32 on x86 and may use fp16 arithmetic
on ARM) or ``"int8"`` (encoder: static int8 through PT2E with litert-torch's quantizer, per-channel
weights, calibrated on a folder of images or scikit-image's sample photos; the decoder stays fp32).

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
    DEFAULT_MAX_POINTS, MobileImageEncoder, MobilePromptDecoder, calibration_set, capture, decoder_example, encoder_example,
    mobile_metadata, quantize_pt2e,
)
from .onnx import ExportError, check_parts, publish, require, staging

FORMAT = "repvit-sam-tflite"
ENCODER_FILE = "encoder.tflite"
DECODER_FILE = "decoder.tflite"
METADATA_FILE = "metadata.json"
QUANTIZE = (None, "fp16", "int8")
MOBILE_EXTRA = "mobile"


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
    with _quiet(), torch.no_grad():
        edge = litert_torch.convert(_Named(module, outputs).eval(), sample_kwargs=inputs, quant_config=quant_config)
        return bytes(edge.model_content())


def _fp16(data: bytes, tmp: Path) -> bytes:
    """Weights of a converted model stored as float16 (ai-edge-quantizer's float casting)."""
    qz = require("ai_edge_quantizer", MOBILE_EXTRA)
    from ai_edge_quantizer import algorithm_manager, qtyping

    src, dst = tmp / "fp32.tflite", tmp / "fp16.tflite"
    src.write_bytes(data)
    with _quiet():
        q = qz.quantizer.Quantizer(str(src))
        q.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                 algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING)
        q.quantize().export_model(str(dst), overwrite=True)
    out = dst.read_bytes()
    src.unlink()
    dst.unlink()
    return out


def _int8_quantizer() -> Any:
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

    return PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))


def _encoder_inputs(preprocess: bool, example: Tuple[torch.Tensor, ...]) -> Dict[str, torch.Tensor]:
    return dict(zip(("image", "image_size") if preprocess else ("image",), example))


def encoder_model(model: Sam, *, preprocess: bool = False, quantize: Optional[str] = None,
                  calibration: Optional[Sequence[Sequence[torch.Tensor]]] = None, tmp: Optional[Path] = None,
                  log: Callable[[str], None] = lambda _m: None) -> bytes:
    """The image encoder as ``.tflite`` bytes (``quantize``: None, "fp16" (needs ``tmp``), "int8"
    (needs ``calibration``: encoder inputs))."""
    enc = MobileImageEncoder(model, preprocess=preprocess).eval()
    example = encoder_example(model, preprocess)
    inputs = _encoder_inputs(preprocess, example)
    if quantize == "int8":
        require("litert_torch", MOBILE_EXTRA)
        from litert_torch.quantize.quant_config import QuantConfig

        if not calibration:
            raise ExportError("int8: the calibration set is empty")
        quantizer = _int8_quantizer()
        q = quantize_pt2e(enc, example, quantizer, calibration, log)
        return convert(q, inputs, ["image_embeddings"], QuantConfig(pt2e_quantizer=quantizer))
    data = convert(enc, inputs, ["image_embeddings"])
    if quantize == "fp16":
        assert tmp is not None
        data = _fp16(data, tmp)
    return data


def decoder_model(model: Sam, max_points: int = DEFAULT_MAX_POINTS, fp16: bool = False, tmp: Optional[Path] = None) -> bytes:
    dec = MobilePromptDecoder(model, max_points).eval()
    data = convert(dec, dict(zip(MOBILE_DECODER_INPUTS, decoder_example(model, max_points))), MOBILE_DECODER_OUTPUTS)
    if fp16:
        assert tmp is not None
        data = _fp16(data, tmp)
    return data


def check_options(quantize: Optional[str], calibration: Optional[os.PathLike], max_points: int) -> None:
    """One-line ExportError for options the LiteRT export cannot honour."""
    if quantize not in QUANTIZE:
        raise ExportError(f"tflite: --quantize {quantize} is not supported; choose fp16 or int8")
    if calibration is not None and quantize != "int8":
        raise ExportError("--calibration is used only with --quantize int8")
    if max_points < 2:
        raise ExportError(f"--max-points must be 2 or more (a click and its padding point), got {max_points}")


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
    from ..utils import write_json_atomic
    from .executorch import _version

    say = log or (lambda _msg: None)
    model = model.eval().cpu().float()
    calib: List = []
    calib_text = None
    if encoder and quantize == "int8":
        calib, calib_text = calibration_set(model, calibration, preprocess)
    written: Dict[str, Path] = {}
    with staging(out_dir, ".tflite-export-") as (out, tmp):
        files: Dict[str, str] = {}
        if encoder:
            say(f"LiteRT: converting the image encoder{f' ({quantize})' if quantize else ''}")
            data = encoder_model(model, preprocess=preprocess, quantize=quantize, calibration=calib, tmp=tmp, log=say)
            (tmp / ENCODER_FILE).write_bytes(data)
            files["encoder"] = ENCODER_FILE
        if decoder:
            say("LiteRT: converting the prompt decoder")
            (tmp / DECODER_FILE).write_bytes(decoder_model(model, max_points, fp16=quantize == "fp16", tmp=tmp))
            files["decoder"] = DECODER_FILE
        meta = mobile_metadata(model, name=name, fmt=FORMAT, runtime="litert", quantize=quantize, preprocess=preprocess,
                               max_points=max_points, files=files, folder=tmp, checkpoint=checkpoint, calibration=calib_text,
                               exporter=f"torch {torch.__version__} -> litert-torch {_version('litert-torch')}")
        publish(tmp, out, list(files.values()))
        written.update((key, out / fname) for key, fname in files.items())
        write_json_atomic(out / METADATA_FILE, meta)
        written["metadata"] = out / METADATA_FILE
    return written
