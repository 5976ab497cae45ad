"""ExecuTorch export: ``encoder.pte`` and ``decoder.pte``, delegated to XNNPACK (the CPU kernels
phones run), plus ``metadata.json``. Interfaces: :mod:`.mobile`.

int8 (``quantize="int8"``): the encoder is quantised after training through PT2E with
ExecuTorch's ``XNNPACKQuantizer`` (symmetric, per-channel weights, static activations),
calibrated on the images of a folder or, without one, on scikit-image's sample photos. The
decoder stays fp32: it runs once per click, is small (4 M parameters) and its logits decide the
mask edges.

Conversion imports ``executorch`` (the ``mobile`` extra) inside the functions.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from ..modeling.sam import Sam
from .manifest import FORMATS, MOBILE_DECODER_INPUTS, MobileModelError, read_mobile_export
from .mobile import (
    DEFAULT_MAX_POINTS, MobileImageEncoder, MobilePromptDecoder, capture, check_common_options, decoder_example,
    encoder_example, package_version, quantize_pt2e, write_mobile_export,
)
from .onnx import ExportError, check_parts, require

FORMAT = "repvit-sam-executorch"
ENCODER_FILE = "encoder.pte"
DECODER_FILE = "decoder.pte"
QUANTIZE = (None, "int8")
MOBILE_EXTRA = "mobile"
# Bumped whenever the same model and calibration would export to a different file, so that files
# cached by an older version (mobile_backends, --cache-dir) are not reused.
EXPORT_REVISION = 1


def _xnnpack_quantizer() -> Any:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config

    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))


def _partitioner(quantized: bool) -> Any:
    """XNNPACK's partitioner; for a quantised graph without its constant-pad rule.

    ExecuTorch 1.4 hands XNNPACK a pad whose input arrives quantised (the dequantise before it
    is folded into the delegate) while its output stays float, and XNNPACK then refuses the
    node at load time (``Failed to create StaticConstantPad node ... invalid_parameter``, the
    program does not load). TinyViT's window attention pads its feature map to a multiple of
    the window, so MobileSAM's int8 encoder hit it. Left out of the delegate, the pad runs as a
    float op of ExecuTorch's own kernels between two XNNPACK subgraphs."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    if not quantized:
        return XnnpackPartitioner()
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
    from executorch.backends.xnnpack.partition.config.generic_node_configs import ConstantPadConfig

    return XnnpackPartitioner(configs=[c for c in ALL_PARTITIONER_CONFIGS if c is not ConstantPadConfig])


def lower(module: torch.nn.Module, example: Sequence[torch.Tensor], quantized: bool = False) -> bytes:
    """``module`` captured with ``torch.export`` and lowered to an ExecuTorch program whose
    supported operators are delegated to XNNPACK; the ``.pte`` bytes. ``quantized``: the
    module went through PT2E (see :func:`_partitioner`)."""
    require("executorch", MOBILE_EXTRA)
    from executorch.exir import to_edge_transform_and_lower

    program = module if isinstance(module, torch.export.ExportedProgram) else capture(module, tuple(example))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return to_edge_transform_and_lower(program, partitioner=[_partitioner(quantized)]).to_executorch().buffer


def program(module: torch.nn.Module, example: Sequence[torch.Tensor], quantize: Optional[str] = None,
            calibration: Optional[Sequence[Sequence[torch.Tensor]]] = None, log: Callable[[str], None] = lambda _m: None) -> bytes:
    """``module`` as ``.pte`` bytes, fp32 or (``quantize="int8"``) quantised after calibration
    on ``calibration`` (a list of input tuples like ``example``)."""
    example = tuple(example)
    if quantize == "int8":
        if not calibration:
            raise ExportError("int8: the calibration set is empty")
        require("executorch", MOBILE_EXTRA)
        q = quantize_pt2e(module, example, _xnnpack_quantizer(), calibration, log)
        return lower(capture(q, example), example, quantized=True)
    return lower(module, example)


def encoder_program(model: Sam, *, preprocess: bool = False, quantize: Optional[str] = None,
                    calibration: Optional[Sequence[Sequence[torch.Tensor]]] = None, log: Callable[[str], None] = lambda _m: None) -> bytes:
    """The image encoder as ``.pte`` bytes; ``quantize="int8"`` needs ``calibration`` (encoder inputs)."""
    enc = MobileImageEncoder(model, preprocess=preprocess).eval()
    return program(enc, encoder_example(model, preprocess), quantize, calibration, log)


def decoder_program(model: Sam, max_points: int = DEFAULT_MAX_POINTS) -> bytes:
    dec = MobilePromptDecoder(model, max_points).eval()
    return lower(dec, decoder_example(model, max_points))


def check_options(quantize: Optional[str], calibration: Optional[os.PathLike], max_points: int) -> None:
    """One-line ExportError for options ExecuTorch export cannot honour."""
    if quantize not in QUANTIZE:
        hint = " (XNNPACK runs fp16 only on ARM CPUs; use 'repvit-sam export tflite --quantize fp16')" if quantize == "fp16" else ""
        raise ExportError(f"executorch: --quantize {quantize} is not supported, only int8{hint}")
    check_common_options(quantize, calibration, max_points)


def export_executorch(
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
    """Write ``encoder.pte``, ``decoder.pte`` and ``metadata.json`` into ``out_dir``.

    ``calibration``: a folder of images for int8 (default: scikit-image's sample photos). Files
    appear only when complete (built in a temporary folder, then moved into place; metadata
    last). Returns {"encoder": path, "decoder": path, "metadata": path} for what was written.
    """
    check_options(quantize, calibration, max_points)
    check_parts(encoder, decoder)
    et = require("executorch", MOBILE_EXTRA)
    model = model.eval().cpu().float()
    version = getattr(et, "__version__", None) or package_version("executorch")
    return write_mobile_export(
        model, out_dir, runtime="executorch", fmt=FORMAT, files=(ENCODER_FILE, DECODER_FILE),
        encoder_bytes=(lambda calib, _tmp, say: encoder_program(model, preprocess=preprocess, quantize=quantize, calibration=calib,
                                                               log=say)) if encoder else None,
        decoder_bytes=(lambda _tmp: decoder_program(model, max_points)) if decoder else None,
        messages=(f"ExecuTorch: lowering the image encoder to XNNPACK{' (int8)' if quantize else ''}",
                  "ExecuTorch: lowering the prompt decoder to XNNPACK"),
        exporter=f"torch {torch.__version__} torch.export -> executorch {version} (XnnpackPartitioner)",
        name=name, checkpoint=checkpoint, quantize=quantize, calibration=calibration, preprocess=preprocess, log=log,
        max_points=max_points)


# ---------------------------------------------------------------------------- running
class ExecuTorchModule:
    """A ``.pte`` file's ``forward`` method on ExecuTorch's runtime: ``module(*tensors)`` ->
    list of output tensors. The runtime memory-plans its activations into one arena when loaded."""

    def __init__(self, path: os.PathLike) -> None:
        require("executorch", MOBILE_EXTRA)
        from executorch.runtime import Runtime

        self.path = Path(path)
        program = Runtime.get().load_program(self.path)
        self.method = program.load_method("forward")
        if self.method is None:
            raise MobileModelError(f"{self.path} has no 'forward' method: not a repvit-sam export")

    def __call__(self, *inputs: torch.Tensor) -> List[torch.Tensor]:
        return list(self.method.execute([t.contiguous() for t in inputs]))


def set_threads(threads: Optional[int]) -> None:
    """Size of ExecuTorch's XNNPACK thread pool (its default: one thread per core)."""
    if threads:
        from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

        _unsafe_reset_threadpool(int(threads))


def load_export(folder: os.PathLike) -> Dict[str, Any]:
    """``{"metadata", "encoder", "decoder"}`` of an export folder, verified against its metadata."""
    meta = read_mobile_export(folder, FORMAT)
    files = meta.get("files", {})
    return {"metadata": meta, **{k: ExecuTorchModule(Path(folder) / f) for k, f in files.items()}}


__all__ = ["export_executorch", "encoder_program", "decoder_program", "ExecuTorchModule", "load_export", "FORMATS", "MOBILE_DECODER_INPUTS"]
