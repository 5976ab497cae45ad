"""Core ML export: the image encoder and the prompt decoder as two ``.mlpackage`` files.

Conversion runs anywhere coremltools installs (Linux included); running the packages needs
macOS / iOS. Graphs are captured with ``torch.export`` and converted from the ExportedProgram:
coremltools 9.0's TorchScript frontend fails on torch 2.13 traces under numpy >= 2.4 (its
``int`` op converts a 1-element array with ``int()``, which numpy 2.4 refuses).

encoder.mlpackage  image (1, 3, S, S) float32, normalised and zero-padded as ``Sam.preprocess``
                   does -> image_embeddings (1, C, e, e)
decoder.mlpackage  the ONNX decoder interface (:mod:`.onnx`) with static-size masks:
                   masks (1, 4, S, S) logits over the padded square, iou_predictions (1, 4),
                   low_res_masks (1, 4, 4e, 4e); 1..``max_points`` points.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
import torch

from ..modeling.sam import Sam
from .onnx import (
    DECODER_INPUTS, DECODER_OUTPUTS, ExportError, OnnxImageEncoder, OnnxPromptDecoder, check_parts,
    decoder_example_inputs, file_sha256, publish, require, staging,
)

ENCODER_PACKAGE = "encoder.mlpackage"
DECODER_PACKAGE = "decoder.mlpackage"
METADATA_FILE = "coreml_metadata.json"
PRECISIONS = ("fp16", "fp32")


def _convert(ct, program, outputs, precision: str, description: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("coremltools").setLevel(logging.ERROR)  # "torch version not tested"
        ml = ct.convert(
            program,
            outputs=[ct.TensorType(name=n, dtype=np.float32) for n in outputs],
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
            minimum_deployment_target=ct.target.macOS13,
        )
    ml.short_description = description
    return ml


def _capture(module: torch.nn.Module, example, dynamic_shapes=None):
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # pytree deprecation chatter from inside torch.export
        return torch.export.export(module, example, dynamic_shapes=dynamic_shapes).run_decompositions({})


def _check_inputs(ml, names) -> None:
    """torch.export names the inputs after the forward arguments; the interface depends on it."""
    got = [i.name for i in ml.get_spec().description.input]
    if got != list(names):
        raise ExportError(f"Core ML inputs came out as {got}, expected {list(names)}")


def export_coreml(
    model: Sam,
    out_dir: os.PathLike,
    *,
    name: str,
    checkpoint: Optional[os.PathLike] = None,
    precision: str = "fp16",
    max_points: int = 16,
    encoder: bool = True,
    decoder: bool = True,
    log: Optional[Callable[[str], None]] = None,
) -> Dict[str, Path]:
    """Write ``encoder.mlpackage``, ``decoder.mlpackage`` and ``coreml_metadata.json`` into
    ``out_dir``; each package appears only when complete (built in a temporary folder, then
    moved into place). Returns the paths written."""
    if precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if max_points < 2:
        raise ExportError(f"max_points must be >= 2 (a click and its padding point), got {max_points}")
    check_parts(encoder, decoder)
    ct = require("coremltools")
    from ..utils import write_json_atomic
    from .onnx import metadata

    say = log or (lambda _msg: None)
    model = model.eval().cpu().float()
    written: Dict[str, Path] = {}
    with staging(out_dir, ".coreml-export-") as (out, tmp):
        built = []
        s = model.img_size
        if encoder:
            say("Core ML: capturing the image encoder")
            enc = OnnxImageEncoder(model, preprocess=False).eval()
            ep = _capture(enc, (torch.randn(1, 3, s, s),))
            say("Core ML: converting the image encoder")
            ml = _convert(ct, ep, ["image_embeddings"], precision, f"{name} image encoder (repvit-sam)")
            ml.save(str(tmp / ENCODER_PACKAGE))
            built.append(("encoder", ENCODER_PACKAGE))
        if decoder:
            say("Core ML: capturing the prompt decoder")
            dec = OnnxPromptDecoder(model, static_size=True).eval()
            n = torch.export.Dim("num_points", min=1, max=max_points)
            shapes = {k: None for k in DECODER_INPUTS}
            shapes["point_coords"] = {1: n}
            shapes["point_labels"] = {1: n}
            ep = _capture(dec, decoder_example_inputs(model, num_points=min(3, max_points)), shapes)
            say("Core ML: converting the prompt decoder")
            ml = _convert(ct, ep, DECODER_OUTPUTS, precision, f"{name} prompt encoder + mask decoder (repvit-sam)")
            _check_inputs(ml, DECODER_INPUTS)
            ml.save(str(tmp / DECODER_PACKAGE))
            built.append(("decoder", DECODER_PACKAGE))
        meta = metadata(model, name=name, opset=0, preprocess=False, static_size=True, checkpoint=checkpoint,
                        sha256=file_sha256(checkpoint) if checkpoint is not None else None)
        del meta["opset"]
        meta.update(format="repvit-sam-coreml", precision=precision, max_points=max_points,
                    files={k: f for k, f in built}, exporter=f"torch {torch.__version__} torch.export -> coremltools {ct.__version__}")
        publish(tmp, out, [fname for _, fname in built])
        written.update((key, out / fname) for key, fname in built)
        write_json_atomic(out / METADATA_FILE, meta)
        written["metadata"] = out / METADATA_FILE
    return written

