"""What the on-device exports (ExecuTorch ``.pte``, LiteRT ``.tflite``) share: the graphs they
capture, the int8 calibration images and the metadata written beside the files.

Both runtimes get static shapes (what XNNPACK, phones' CPU kernels, runs best and what app code
handles most simply):

encoder  ``image`` (1, 3, S, S) float32, normalised and zero-padded as ``Sam.preprocess`` does
         (the ONNX encoder's input) -> ``image_embeddings`` (1, C, e, e).
         ``preprocess=True``: ``image`` (1, 3, S, S) float32 RGB in 0..255 with the resized
         image (long side S) in the top-left corner, anything elsewhere, and ``image_size``
         (2,) float32 = (h, w) of that resized image; the graph normalises and zeroes the
         padding itself.
decoder  the ONNX decoder's inputs without ``orig_im_size``: ``image_embeddings``,
         ``point_coords`` (1, P, 2) XY in the resized frame, ``point_labels`` (1, P)
         (1 fg, 0 bg, 2 / 3 box corners, -1 SAM's padding point, **-2 an unused slot**),
         ``mask_input`` (1, 1, 4e, 4e), ``has_mask_input`` (1,)
         -> ``iou_predictions`` (1, 4), ``low_res_masks`` (1, 4, 4e, 4e) logits.
         P = ``max_points`` is fixed; unused slots (label -2) are masked out of every attention,
         so the result equals SAM's for the real points alone (a padding point labelled -1,
         which SAM's predictor adds when there is no box, is a real token: keep it). Mask 0 is
         the single-mask output, 1..3 the multimask candidates. Upscaling the low-res logits
         to the image (bilinear to S x S, crop to (h, w), bilinear to (H, W)) is the app's,
         done once per click on the mask it shows.

Importing this module imports torch; the runtimes' own packages load inside functions.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..modeling.sam import Sam
from .manifest import EMPTY_LABEL, MOBILE_DECODER_INPUTS, MOBILE_DECODER_OUTPUTS, file_sha256, pad_prompt
from .onnx import ExportError

DEFAULT_MAX_POINTS = 16
METADATA_FILE = "metadata.json"  # beside the files of every on-device export
# images used for int8 calibration when a folder has more: on the trained tiny model 8 gave mask
# IoU 0.94 against fp32, 32 gave 0.96 (docs/mobile.md, "int8 fidelity")
CALIBRATION_DEFAULT = 32
SAMPLE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "hubble_deep_field", "immunohistochemistry", "coins")


class MobileImageEncoder(nn.Module):
    """The image encoder with a static input (see the module docstring).

    ``preprocess=False``: ``forward(image)``, image normalised and zero-padded, (1, 3, S, S).
    ``preprocess=True``: ``forward(image, image_size)``, image (1, 3, S, S) RGB 0..255 with the
    resized image top-left, image_size (2,) its (h, w); normalisation and zero padding in-graph.
    """

    def __init__(self, model: Sam, preprocess: bool = False) -> None:
        super().__init__()
        self.encoder = model.image_encoder
        self.preprocess = preprocess
        s = model.img_size
        self.register_buffer("mean", model.pixel_mean.detach().clone().reshape(1, 3, 1, 1))
        self.register_buffer("std", model.pixel_std.detach().clone().reshape(1, 3, 1, 1))
        self.register_buffer("rows", torch.arange(s, dtype=torch.float32).reshape(1, 1, s, 1))
        self.register_buffer("cols", torch.arange(s, dtype=torch.float32).reshape(1, 1, 1, s))

    def forward(self, image: torch.Tensor, image_size: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.preprocess:
            assert image_size is not None
            inside = (self.rows < image_size[0]) & (self.cols < image_size[1])  # (1, 1, S, S)
            image = ((image - self.mean) / self.std) * inside.to(image.dtype)
        return self.encoder(image)


def _attend(attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """SAM's ``Attention`` with an additive bias on the keys (0 or -inf; (1, 1, 1, Nk)), computed
    from the module's own projections."""
    heads = attn.num_heads
    b, nq, _ = q.shape
    q = attn.q_proj(q).reshape(b, nq, heads, -1).transpose(1, 2)  # (B, h, Nq, d)
    k = attn.k_proj(k).reshape(b, k.shape[1], heads, -1).transpose(1, 2)  # (B, h, Nk, d)
    v = attn.v_proj(v).reshape(b, v.shape[1], heads, -1).transpose(1, 2)
    w = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, h, Nq, Nk)
    if key_bias is not None:
        w = w + key_bias
    out = (torch.softmax(w, dim=-1) @ v).transpose(1, 2).reshape(b, nq, -1)  # (B, Nq, h * d)
    return attn.out_proj(out)


class MobilePromptDecoder(nn.Module):
    """Prompt encoder + mask decoder with ``max_points`` fixed point slots (see the module
    docstring). Computes what ``model.mask_decoder.predict_masks`` computes for the points whose
    label is >= -1; slots labelled below -1 take part in nothing that reaches the outputs."""

    def __init__(self, model: Sam, max_points: int = DEFAULT_MAX_POINTS) -> None:
        super().__init__()
        pe = model.prompt_encoder
        self.img_size = model.img_size
        self.max_points = max_points
        self.pe_layer = pe.pe_layer
        self.mask_downscaling = pe.mask_downscaling
        self.decoder = model.mask_decoder
        self.register_buffer("label_embed", torch.cat([e.weight.detach() for e in pe.point_embeddings]).clone())
        self.register_buffer("not_a_point", pe.not_a_point_embed.weight.detach().clone())
        self.register_buffer("no_mask", pe.no_mask_embed.weight.detach().clone().reshape(1, -1, 1, 1))
        md = model.mask_decoder
        self.register_buffer("output_tokens", torch.cat([md.iou_token.weight, md.mask_tokens.weight]).detach().clone()[None])
        with torch.no_grad():  # stored as (1, HW, C), contiguous: ExecuTorch 1.4 folds a permuted constant wrongly
            self.register_buffer("key_pe", pe.get_dense_pe().detach().flatten(2).permute(0, 2, 1).contiguous())

    def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        emb = self.pe_layer.forward_with_coords(coords + 0.5, (self.img_size, self.img_size))  # (1, P, C)
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
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        md = self.decoder
        t = md.transformer
        sparse = self._embed_points(point_coords, point_labels)  # (1, P, C)
        has = has_mask_input.reshape(1, 1, 1, 1)
        dense = has * self.mask_downscaling(mask_input) + (1 - has) * self.no_mask  # (1, C, e, e)

        tokens = torch.cat([self.output_tokens, sparse], dim=1)  # (1, 5 + P, C)
        used = torch.cat([torch.ones_like(point_labels[:, :1]).expand(1, self.output_tokens.shape[1]), point_labels + 1.5], dim=1)
        key_bias = torch.where(used > 0, 0.0, float("-inf")).reshape(1, 1, 1, -1)  # label >= -1: used

        src = image_embeddings + dense
        b, c, h, w = src.shape
        keys = src.flatten(2).permute(0, 2, 1)  # (1, HW, C)
        key_pe = self.key_pe  # (1, HW, C)
        queries, query_pe = tokens, tokens
        for layer in t.layers:
            if layer.skip_first_layer_pe:
                queries = _attend(layer.self_attn, queries, queries, queries, key_bias)
            else:
                q = queries + query_pe
                queries = queries + _attend(layer.self_attn, q, q, queries, key_bias)
            queries = layer.norm1(queries)
            q, k = queries + query_pe, keys + key_pe
            queries = layer.norm2(queries + _attend(layer.cross_attn_token_to_image, q, k, keys))
            queries = layer.norm3(queries + layer.mlp(queries))
            q, k = queries + query_pe, keys + key_pe
            keys = layer.norm4(keys + _attend(layer.cross_attn_image_to_token, k, q, queries, key_bias))
        n_out = self.output_tokens.shape[1]
        q = (queries + query_pe)[:, :n_out]  # only the output tokens are read from here on
        queries = t.norm_final_attn(queries[:, :n_out] + _attend(t.final_attn_token_to_image, q, keys + key_pe, keys))

        src = keys.transpose(1, 2).reshape(b, c, h, w)
        upscaled = md.output_upscaling(src)  # (1, C/8, 4e, 4e)
        hyper = torch.stack([mlp(queries[:, 1 + i]) for i, mlp in enumerate(md.output_hypernetworks_mlps)], dim=1)  # (1, 4, C/8)
        b, c8, hh, ww = upscaled.shape
        low_res = (hyper @ upscaled.reshape(b, c8, hh * ww)).reshape(b, -1, hh, ww)
        iou = md.iou_prediction_head(queries[:, 0])
        return iou, low_res


# ---------------------------------------------------------------------------- example inputs
def encoder_example(model: Sam, preprocess: bool, image: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, ...]:
    s = model.img_size
    if not preprocess:
        return (torch.randn(1, 3, s, s) if image is None else image,)
    return (torch.rand(1, 3, s, s) * 255 if image is None else image, torch.tensor([float(s * 3 // 4), float(s)]))


def decoder_example(model: Sam, max_points: int, num_points: int = 3, seed: int = 0) -> Tuple[torch.Tensor, ...]:
    """Mobile decoder inputs: ``num_points`` random clicks (the last a -1 padding point), rest unused."""
    e = model.prompt_encoder.image_embedding_size
    c = model.prompt_encoder.embed_dim
    g = torch.Generator().manual_seed(seed)
    n = min(num_points, max_points)
    coords = (torch.rand(n, 2, generator=g) * model.img_size).numpy()
    labels = np.array([1.0] * (n - 1) + [-1.0])
    pc, pl = pad_prompt(coords, labels, max_points)
    return (
        torch.randn(1, c, e[0], e[1], generator=g),
        torch.from_numpy(pc),
        torch.from_numpy(pl),
        torch.randn(1, 1, 4 * e[0], 4 * e[1], generator=g),
        torch.tensor([1.0]),
    )


# ---------------------------------------------------------------------------- calibration
def sample_photos() -> List[np.ndarray]:
    """scikit-image's bundled photos (RGB uint8): the calibration set when no images are given."""
    try:
        from skimage import data
    except ImportError:
        raise ExportError("int8 calibration without --calibration needs scikit-image's sample photos: pip install 'repvit-sam[mobile]'") from None
    from ..io import to_rgb_uint8

    return [to_rgb_uint8(getattr(data, name)()) for name in SAMPLE_PHOTOS if hasattr(data, name)]


def folder_images(folder: os.PathLike, limit: int = CALIBRATION_DEFAULT) -> List[np.ndarray]:
    """Up to ``limit`` images (sorted by name) from ``folder``, as RGB uint8."""
    from ..everything import IMAGE_SUFFIXES
    from ..io import load_image

    path = Path(folder)
    if not path.is_dir():
        raise ExportError(f"calibration folder not found: {path} (give a folder of photos like the ones the model will see)")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ExportError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in calibration folder {path}")
    return [load_image(p) for p in files[:limit]]


def calibration_inputs(model: Sam, images: Sequence[np.ndarray], preprocess: bool) -> List[Tuple[torch.Tensor, ...]]:
    """The encoder's inputs for ``images`` (RGB uint8), prepared as the predictor prepares them."""
    from ..inference.transforms import ResizeLongestSide

    s = model.img_size
    resize = ResizeLongestSide(s)
    out = []
    for img in images:
        x = torch.as_tensor(resize.apply_image(img)).permute(2, 0, 1)[None].float()  # (1, 3, h, w) 0..255
        h, w = x.shape[-2:]
        if preprocess:
            out.append((F.pad(x, (0, s - w, 0, s - h)), torch.tensor([float(h), float(w)])))
        else:
            with torch.no_grad():
                out.append((model.preprocess(x),))
    return out


def calibration_set(model: Sam, folder: Optional[os.PathLike], preprocess: bool, limit: int = CALIBRATION_DEFAULT) -> Tuple[List[Tuple[torch.Tensor, ...]], str]:
    """(encoder inputs, a description of where they came from) for int8 calibration."""
    if folder is not None:
        images = folder_images(folder, limit)
        return calibration_inputs(model, images, preprocess), f"{len(images)} image(s) from {folder}"
    images = sample_photos()[:limit]
    return calibration_inputs(model, images, preprocess), f"{len(images)} scikit-image sample photos"


def quantize_pt2e(module: nn.Module, example: Tuple[torch.Tensor, ...], quantizer: Any, calibration: Sequence[Tuple[torch.Tensor, ...]],
                  log: Callable[[str], None]) -> nn.Module:
    """Static int8 post-training quantisation through PT2E: capture, insert observers, run the
    calibration inputs, convert (quantize / dequantize pairs the runtimes fuse into int8 kernels)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    captured = capture(module, example).module()
    prepared = prepare_pt2e(captured, quantizer)
    from tqdm import tqdm

    with torch.no_grad():
        for inputs in tqdm(calibration, desc="int8 calibration", unit="image", leave=False):
            prepared(*inputs)
    log(f"int8: calibrated on {len(calibration)} image(s)")
    return convert_pt2e(prepared)


def capture(module: nn.Module, example: Tuple[torch.Tensor, ...]) -> "torch.export.ExportedProgram":
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # pytree / deprecation chatter from inside torch.export
        return torch.export.export(module, example)


# ---------------------------------------------------------------------------- metadata
def mobile_metadata(model: Sam, *, name: str, fmt: str, runtime: str, quantize: Optional[str], preprocess: bool, max_points: int,
                    files: Dict[str, str], folder: Path, checkpoint: Optional[os.PathLike], calibration: Optional[str], exporter: str) -> Dict[str, Any]:
    """``metadata.json`` for an on-device export: the model's constants (as for ONNX), the
    interface, and the SHA-256 of every file, which the runtimes check before loading."""
    from .onnx import metadata

    meta = metadata(model, name=name, opset=0, preprocess=preprocess, static_size=True, checkpoint=checkpoint,
                    sha256=file_sha256(checkpoint) if checkpoint is not None else None)
    del meta["opset"], meta["decoder_outputs"], meta["decoder_inputs"]
    meta.update(
        format=fmt,
        runtime=runtime,
        delegate="XNNPACK",
        quantize=quantize or "none",
        encoder_inputs=["image", "image_size"] if preprocess else ["image"],
        encoder_outputs=["image_embeddings"],
        decoder_inputs=list(MOBILE_DECODER_INPUTS),
        decoder_outputs=list(MOBILE_DECODER_OUTPUTS),
        max_points=max_points,
        empty_label=EMPTY_LABEL,
        calibration=calibration,
        files=dict(files),
        sha256={key: file_sha256(folder / fname) for key, fname in files.items()},
        exporter=exporter,
    )
    return meta


# ---------------------------------------------------------------------------- the export driver
def package_version(package: str) -> Optional[str]:
    """The installed version of ``package``, or None."""
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_common_options(quantize: Optional[str], calibration: Optional[os.PathLike], max_points: int) -> None:
    """One-line ExportError for the options no on-device export can honour (each runtime checks
    its own ``quantize`` choices first)."""
    if calibration is not None and quantize != "int8":
        raise ExportError("--calibration is used only with --quantize int8")
    if max_points < 2:
        raise ExportError(f"--max-points must be 2 or more (a click and its padding point), got {max_points}")


def write_mobile_export(
    model: Sam,
    out_dir: os.PathLike,
    *,
    runtime: str,
    fmt: str,
    files: Tuple[str, str],
    encoder_bytes: Optional[Callable[[List, Path, Callable[[str], None]], bytes]],
    decoder_bytes: Optional[Callable[[Path], bytes]],
    messages: Tuple[str, str],
    exporter: str,
    name: str,
    checkpoint: Optional[os.PathLike],
    quantize: Optional[str],
    calibration: Optional[os.PathLike],
    preprocess: bool,
    log: Optional[Callable[[str], None]],
    max_points: int,
) -> Dict[str, Path]:
    """What every on-device export does around its runtime's conversion of ``model`` (already
    in eval mode, fp32, on the CPU): the calibration inputs for int8, a staging folder, the files
    ``files`` = (encoder file, decoder file) made by ``encoder_bytes(calibration inputs, staging
    folder, log)`` and ``decoder_bytes(staging folder)`` (None: left out), ``messages`` logged
    before each, then the files moved into ``out_dir`` and ``metadata.json`` written last, so
    files appear only when complete. Returns the paths written, by key."""
    from ..utils import write_json_atomic
    from .onnx import publish, staging

    say = log or (lambda _msg: None)
    calib: List = []
    calib_text = None
    if encoder_bytes is not None and quantize == "int8":
        calib, calib_text = calibration_set(model, calibration, preprocess)
    written: Dict[str, Path] = {}
    with staging(out_dir, f".{runtime}-export-") as (out, tmp):
        names: Dict[str, str] = {}
        if encoder_bytes is not None:
            say(messages[0])
            (tmp / files[0]).write_bytes(encoder_bytes(calib, tmp, say))
            names["encoder"] = files[0]
        if decoder_bytes is not None:
            say(messages[1])
            (tmp / files[1]).write_bytes(decoder_bytes(tmp))
            names["decoder"] = files[1]
        meta = mobile_metadata(model, name=name, fmt=fmt, runtime=runtime, quantize=quantize, preprocess=preprocess,
                               max_points=max_points, files=names, folder=tmp, checkpoint=checkpoint, calibration=calib_text,
                               exporter=exporter)
        publish(tmp, out, list(names.values()))
        written.update((key, out / fname) for key, fname in names.items())
        write_json_atomic(out / METADATA_FILE, meta)
        written["metadata"] = out / METADATA_FILE
    return written
