"""ONNX export of the image encoder and of the prompt encoder + mask decoder.

The decoder graph has segment_anything's ONNX interface (``SamOnnxModel``):

inputs   image_embeddings (1, C, e, e) float32 - the encoder's output
         point_coords     (1, N, 2)   float32 - XY in the resized input frame (long side img_size)
         point_labels     (1, N)      float32 - 1 fg, 0 bg, 2 / 3 box corners, -1 padding point
         mask_input       (1, 1, 4e, 4e) float32 - low-res logits of a previous call
         has_mask_input   (1,)        float32 - 1 to use mask_input, 0 to ignore it
         orig_im_size     (2,)        float32 - (H, W) of the original image
outputs  masks            (1, 4, H, W) logits (static mode: (1, 4, img_size, img_size))
         iou_predictions  (1, 4)
         low_res_masks    (1, 4, 4e, 4e) logits

Output 0 along the mask axis is the single-mask token, 1..3 the multimask candidates (what
``SamPredictor.predict`` returns with ``multimask_output=False`` / ``True``). A box is two
points labelled 2 and 3 after the clicks; without a box, append a padding point (0, 0)
labelled -1 (as ``SamPredictor`` does). N is dynamic.

Exporter: torch.onnx's TorchScript-based path (``dynamo=False``). It gives a flat graph, a
dynamic point axis from ``dynamic_axes`` and the data-dependent crop / resize to
``orig_im_size`` that the dynamo exporter cannot express without guards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..modeling.sam import Sam
from ..utils import file_sha256
from ..utils import require as require_extra

DEFAULT_OPSET = 17
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
METADATA_FILE = "metadata.json"
DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size")
DECODER_OUTPUTS = ("masks", "iou_predictions", "low_res_masks")


class ExportError(RuntimeError):
    """An export could not be produced (bad options, missing converter)."""


class OnnxImageEncoder(nn.Module):
    """The image encoder, optionally with SAM's normalisation and zero padding inside.

    ``preprocess=False``: input ``image`` (1, 3, S, S) already normalised and padded
    (``Sam.preprocess``). ``preprocess=True``: input ``image`` (1, 3, h, w) float32 RGB in
    0..255, resized so that max(h, w) == S (h, w dynamic); the graph normalises with the
    model's mean / std and pads bottom-right to S x S with zeros, exactly as ``Sam.preprocess``.
    """

    def __init__(self, model: Sam, preprocess: bool = False) -> None:
        super().__init__()
        self.encoder = model.image_encoder
        self.preprocess = preprocess
        self.img_size = model.img_size
        self.register_buffer("mean", model.pixel_mean.detach().clone().reshape(1, 3, 1, 1))
        self.register_buffer("std", model.pixel_std.detach().clone().reshape(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.preprocess:
            x = (image - self.mean) / self.std
            h, w = x.shape[-2:]
            image = F.pad(x, (0, self.img_size - w, 0, self.img_size - h))
        return self.encoder(image)


class OnnxPromptDecoder(nn.Module):
    """Prompt encoder + mask decoder with segment_anything's ONNX interface (see module doc).

    ``static_size=True`` (TensorRT-friendly): ``masks`` is (1, 4, S, S), the logits upscaled
    to the padded input square; crop ``[:h, :w]`` (the resized image's size) and resize to
    (H, W) yourself. The graph then has only static shapes apart from the point axis, and no
    float64, Loop or If nodes. ``orig_im_size`` stays an input so that one caller fits both
    variants (it is multiplied by 0 and added to the scores: the exporter drops unused inputs).
    """

    def __init__(self, model: Sam, static_size: bool = False) -> None:
        super().__init__()
        pe = model.prompt_encoder
        self.img_size = model.img_size
        self.static_size = static_size
        self.pe_layer = pe.pe_layer
        self.mask_downscaling = pe.mask_downscaling
        self.mask_decoder = model.mask_decoder
        # label i in 0..3 -> point_embeddings[i]; -1 -> not_a_point_embed
        self.register_buffer("label_embed", torch.cat([e.weight.detach() for e in pe.point_embeddings]).clone())
        self.register_buffer("not_a_point", pe.not_a_point_embed.weight.detach().clone())
        self.register_buffer("no_mask", pe.no_mask_embed.weight.detach().clone().reshape(1, -1, 1, 1))
        with torch.no_grad():  # a constant of the graph (saves the cumsum / sin / cos per call)
            self.register_buffer("dense_pe", pe.get_dense_pe().detach().clone())

    def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        emb = self.pe_layer._pe_encoding((coords + 0.5) / self.img_size)  # (1, N, C)
        labels = labels.unsqueeze(-1)
        emb = emb * (labels != -1).to(emb.dtype) + self.not_a_point * (labels == -1).to(emb.dtype)
        for i in range(self.label_embed.shape[0]):
            emb = emb + self.label_embed[i] * (labels == i).to(emb.dtype)
        return emb

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ):
        sparse = self._embed_points(point_coords, point_labels)
        has = has_mask_input.reshape(1, 1, 1, 1)
        dense = has * self.mask_downscaling(mask_input) + (1 - has) * self.no_mask
        low_res, iou = self.mask_decoder.predict_masks(image_embeddings, self.dense_pe, sparse, dense)
        s = self.img_size
        masks = F.interpolate(low_res, (s, s), mode="bilinear", align_corners=False)
        if self.static_size:
            iou = iou + 0 * orig_im_size.sum()  # keeps the interface's input in the graph
            return masks, iou, low_res
        # The resized image's (h, w), computed as ResizeLongestSide does (float64, round half up).
        size = orig_im_size.to(torch.float64)
        input_hw = (size * (s / size.max()) + 0.5).to(torch.int64)
        masks = masks[:, :, : input_hw[0], : input_hw[1]]
        out_hw = orig_im_size.to(torch.int64)
        masks = F.interpolate(masks, size=(out_hw[0], out_hw[1]), mode="bilinear", align_corners=False)
        return masks, iou, low_res


@contextlib.contextmanager
def staging(out_dir: os.PathLike, prefix: str) -> Iterator[Tuple[Path, Path]]:
    """(output folder, a temporary folder inside it) for building an export; the temporary
    folder and whatever is left in it go away at the end, whatever happens."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=out))
    try:
        yield out, tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish(tmp: Path, out: Path, names) -> None:
    """Move finished files or folders (``.mlpackage``) from ``tmp`` into ``out``, each in one
    rename; a folder already there is first moved into ``tmp`` (and goes away with it)."""
    for name in names:
        dest = out / name
        if dest.is_dir():
            os.replace(dest, tmp / f"{name}.old")
        os.replace(tmp / name, dest)


def check_parts(encoder: bool, decoder: bool) -> None:
    if not (encoder or decoder):
        raise ExportError("nothing to export: both the encoder and the decoder were left out")


def require(module: str, extra: str = "export") -> Any:
    """Import an optional dependency, or raise :class:`ExportError` naming the extra to install."""
    return require_extra(module, extra, ExportError)


def decoder_example_inputs(model: Sam, num_points: int = 3, orig_size=(480, 640)):
    """Inputs in the decoder interface for a trace / a check."""
    e = model.prompt_encoder.image_embedding_size
    c = model.prompt_encoder.embed_dim
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(1, c, e[0], e[1], generator=g),
        torch.rand(1, num_points, 2, generator=g) * model.img_size,
        torch.tensor([[1.0] * (num_points - 1) + [-1.0]]),
        torch.randn(1, 1, 4 * e[0], 4 * e[1], generator=g),
        torch.tensor([1.0]),
        torch.tensor([float(orig_size[0]), float(orig_size[1])]),
    )


def _onnx_export(module: nn.Module, args, path: Path, input_names, output_names, dynamic_axes, opset: int) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer / deprecation chatter about the TorchScript path
        torch.onnx.export(
            module, args, str(path), dynamo=False, opset_version=opset, do_constant_folding=True,
            input_names=list(input_names), output_names=list(output_names), dynamic_axes=dynamic_axes,
        )


def _fix_decoder_output_shapes(onnx, path: Path, model: Sam, static_size: bool) -> None:
    """Name the decoder outputs' dimensions as they are (the tracer leaves them symbolic):
    static where they are static, which TensorRT and other ahead-of-time runtimes want."""
    s = model.img_size
    low_h, low_w = model.prompt_encoder.mask_input_size
    k = model.mask_decoder.num_mask_tokens
    shapes = {
        "masks": (1, k, s, s) if static_size else (1, k, "height", "width"),
        "iou_predictions": (1, k),
        "low_res_masks": (1, k, low_h, low_w),
    }
    proto = onnx.load(str(path), load_external_data=False)  # graph only; weights stay where they are
    for out in proto.graph.output:
        dims = out.type.tensor_type.shape.dim
        for dim, value in zip(dims, shapes[out.name]):
            dim.Clear()
            if isinstance(value, int):
                dim.dim_value = value
            else:
                dim.dim_param = value
    onnx.save(proto, str(path))


def export_onnx(
    model: Sam,
    out_dir: os.PathLike,
    *,
    name: str,
    checkpoint: Optional[os.PathLike] = None,
    opset: int = DEFAULT_OPSET,
    preprocess: bool = False,
    static_size: bool = False,
    encoder: bool = True,
    decoder: bool = True,
    log: Optional[Callable[[str], None]] = None,
) -> Dict[str, Path]:
    """Write ``encoder.onnx``, ``decoder.onnx`` and ``metadata.json`` into ``out_dir``.

    Files appear only when complete: everything is written into a temporary folder inside
    ``out_dir`` first, checked with ``onnx.checker``, then moved into place (metadata last).
    Returns {"encoder": path, "decoder": path, "metadata": path} for what was written.
    """
    if opset < 17:
        raise ExportError(f"opset must be >= 17 (LayerNormalization and friends), got {opset}")
    check_parts(encoder, decoder)
    onnx = require("onnx")
    from ..utils import write_json_atomic

    say = log or (lambda _msg: None)
    model = model.eval().cpu().float()
    written: Dict[str, Path] = {}
    with staging(out_dir, ".onnx-export-") as (out, tmp):
        files = []
        if encoder:
            say("ONNX: exporting the image encoder")
            enc = OnnxImageEncoder(model, preprocess=preprocess).eval()
            s = model.img_size
            if preprocess:
                x = torch.rand(1, 3, s, s * 3 // 4) * 255
                axes = {"image": {2: "height", 3: "width"}}
            else:
                x = torch.randn(1, 3, s, s)
                axes = None
            _onnx_export(enc, (x,), tmp / ENCODER_FILE, ["image"], ["image_embeddings"], axes, opset)
            files.append(("encoder", ENCODER_FILE))
        if decoder:
            say("ONNX: exporting the prompt decoder")
            dec = OnnxPromptDecoder(model, static_size=static_size).eval()
            axes = {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}}
            if not static_size:
                axes["masks"] = {2: "height", 3: "width"}
            _onnx_export(dec, decoder_example_inputs(model), tmp / DECODER_FILE, DECODER_INPUTS, DECODER_OUTPUTS, axes, opset)
            _fix_decoder_output_shapes(onnx, tmp / DECODER_FILE, model, static_size)
            files.append(("decoder", DECODER_FILE))
        say("ONNX: checking the graphs")
        for _, fname in files:
            onnx.checker.check_model(str(tmp / fname))  # by path: works past protobuf's 2 GB too
        sha = file_sha256(checkpoint) if checkpoint is not None else None
        meta = metadata(model, name=name, opset=opset, preprocess=preprocess, static_size=static_size, checkpoint=checkpoint, sha256=sha)
        meta["files"] = {k: f for k, f in files}
        publish(tmp, out, sorted(os.listdir(tmp)))  # the graphs (and any external data files)
        written.update((key, out / fname) for key, fname in files)
        write_json_atomic(out / METADATA_FILE, meta)
        written["metadata"] = out / METADATA_FILE
    return written


def _short(value: float) -> float:
    """The shortest decimal that reads back as the same float32 (123.675, not 123.67500305)."""
    return float(str(np.float32(value)))


def metadata(model: Sam, *, name: str, opset: int, preprocess: bool, static_size: bool, checkpoint=None, sha256=None) -> dict:
    """What a runtime needs besides the graphs (read by :mod:`repvit_sam.onnx_runtime`)."""
    pe = model.prompt_encoder
    return {
        "format": "repvit-sam-onnx",
        "version": 1,
        "model": name,
        "img_size": model.img_size,
        "pixel_mean": [_short(v) for v in model.pixel_mean.flatten().tolist()],
        "pixel_std": [_short(v) for v in model.pixel_std.flatten().tolist()],
        "image_format": model.image_format,
        "mask_threshold": float(model.mask_threshold),
        "embedding_size": list(pe.image_embedding_size),
        "embedding_dim": int(pe.embed_dim),
        "low_res_size": list(pe.mask_input_size),
        "opset": opset,
        "encoder_preprocess": preprocess,
        "decoder_static_size": static_size,
        "decoder_inputs": list(DECODER_INPUTS),
        "decoder_outputs": list(DECODER_OUTPUTS),
        "checkpoint": None if checkpoint is None else os.path.basename(str(checkpoint)),
        "checkpoint_sha256": sha256,
        "exporter": f"torch {torch.__version__} torch.onnx (TorchScript path, dynamo=False)",
    }
