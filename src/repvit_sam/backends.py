"""Image-encoder backends: one name -> a callable that maps a preprocessed (B, 3, S, S) float
tensor to image embeddings (B, 256, S/16, S/16), float32, on the input's device.

    encode = prepare_encoder(model.image_encoder, "openvino-bf16")
    emb = encode(x)

The predictor and the automatic mask generator take ``backend=`` and call this; the benchmark
(``repvit-sam bench``) measures every backend in ``BACKENDS``. ``available_backends()`` says
which can run on this machine and, for the others, why not.

CPU backends: ``eager`` (the module as given: the original, unfused computation), ``fused``
(BatchNorm folded into the convolutions), ``fused-cl`` (+ channels_last), ``bf16`` (+ bfloat16
autocast), ``compile`` (``torch.compile`` of ``fused-cl``), ``onnxruntime`` and ``openvino``
(fp32), ``openvino-bf16`` (OpenVINO with bfloat16 inference precision) and ``int8``
(post-training quantisation with NNCF, run by OpenVINO). The ONNX Runtime / OpenVINO backends
export the fused encoder to ONNX once per input shape (see ``cache_dir``) and run it on numpy
copies of the input. GPU backends: ``cuda`` (fp32), ``cuda-fp16`` / ``cuda-bf16`` (autocast +
channels_last), ``cuda-graphs`` (bf16, replayed from a captured CUDA graph) and ``cuda-compile``
(bf16, ``torch.compile(mode="reduce-overhead")``).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.util
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .config import PIXEL_MEAN, PIXEL_STD
from .modeling.fuse import fuse_model
from .utils import require

Encoder = Callable[[torch.Tensor], torch.Tensor]

FAST_EXTRA = "pip install 'repvit-sam[fast]'"


@dataclass(frozen=True)
class BackendInfo:
    """What a backend computes in and what it needs."""

    name: str
    precision: str  # "fp32", "bf16", "fp16" or "int8": the arithmetic of its matrix products
    device: str  # "cpu" or "cuda"
    packages: Tuple[str, ...]  # importable modules it needs beyond torch
    summary: str


_INFO: Tuple[BackendInfo, ...] = (
    BackendInfo("eager", "fp32", "cpu", (), "the module as given (original, unfused computation)"),
    BackendInfo("fused", "fp32", "cpu", (), "BatchNorm folded into the convolutions"),
    BackendInfo("fused-cl", "fp32", "cpu", (), "fused + channels_last memory format"),
    BackendInfo("bf16", "bf16", "cpu", (), "fused + channels_last + bfloat16 autocast"),
    BackendInfo("compile", "fp32", "cpu", (), "torch.compile (inductor) of fused + channels_last"),
    BackendInfo("onnxruntime", "fp32", "cpu", ("onnx", "onnxruntime"), "ONNX Runtime, fp32"),
    BackendInfo("openvino", "fp32", "cpu", ("onnx", "openvino"), "OpenVINO, fp32"),
    BackendInfo("openvino-bf16", "bf16", "cpu", ("onnx", "openvino"), "OpenVINO, bfloat16 inference precision"),
    BackendInfo("int8", "int8", "cpu", ("onnx", "openvino", "nncf"), "NNCF post-training int8 quantisation, run by OpenVINO"),
    BackendInfo("executorch", "fp32", "cpu", ("executorch",), "ExecuTorch, XNNPACK delegate, fp32 (.pte)"),
    BackendInfo("executorch-int8", "int8", "cpu", ("executorch",), "ExecuTorch, XNNPACK delegate, PT2E static int8"),
    BackendInfo("litert", "fp32", "cpu", ("litert_torch", "ai_edge_litert"), "LiteRT (TFLite), XNNPACK delegate, fp32 (.tflite)"),
    BackendInfo("litert-int8", "int8", "cpu", ("litert_torch", "ai_edge_litert"), "LiteRT (TFLite), XNNPACK delegate, static int8 by ai-edge-quantizer"),
    BackendInfo("cuda", "fp32", "cuda", (), "CUDA, fp32"),
    BackendInfo("cuda-fp16", "fp16", "cuda", (), "CUDA, fp16 autocast + channels_last"),
    BackendInfo("cuda-bf16", "bf16", "cuda", (), "CUDA, bf16 autocast + channels_last"),
    BackendInfo("cuda-graphs", "bf16", "cuda", (), "CUDA, bf16, replayed from a captured CUDA graph"),
    BackendInfo("cuda-compile", "bf16", "cuda", (), "CUDA, bf16, torch.compile(mode='reduce-overhead')"),
)
INFO: Dict[str, BackendInfo] = {b.name: b for b in _INFO}
BACKENDS: Tuple[str, ...] = tuple(INFO)


MOBILE_BACKENDS = ("executorch", "executorch-int8", "litert", "litert-int8")  # on-device runtimes: repvit_sam.mobile_backends


class BackendError(ValueError):
    """Unknown or unavailable backend."""


def _check(name: str) -> BackendInfo:
    if name not in INFO:
        raise BackendError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    return INFO[name]


def _missing_packages(info: BackendInfo) -> List[str]:
    missing = []
    for pkg in info.packages:
        try:
            found = importlib.util.find_spec(pkg) is not None
        except (ImportError, ValueError):  # a module set to None in sys.modules, or a broken one
            found = False
        if not found:
            missing.append(pkg)
    return missing


def unavailable_reason(name: str) -> Optional[str]:
    """Why backend ``name`` cannot run here, or None when it can."""
    info = _check(name)
    missing = _missing_packages(info)
    if missing:
        extra = "pip install 'repvit-sam[mobile]'" if name in MOBILE_BACKENDS else FAST_EXTRA
        return f"backend {name!r} needs {', '.join(missing)}: {extra}"
    if info.device == "cuda" and not torch.cuda.is_available():
        return f"backend {name!r} needs a CUDA GPU; torch.cuda.is_available() is False here"
    if name == "compile" and shutil.which(os.environ.get("CXX", "g++")) is None and shutil.which("c++") is None:
        return "backend 'compile' needs a C++ compiler (g++) for torch.compile on CPU"
    return None


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16 in its flags).
    Without it the bf16 CPU backends emulate bfloat16 and are slower than fp32 (OpenVINO bf16
    ran the RepViT-SAM encoder 4x slower than OpenVINO fp32 on an AVX-512 Xeon without it), so
    nothing should pick them by default there. False where the flags cannot be read."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def available_backends() -> Dict[str, Optional[str]]:
    """Every backend name -> None if it can run on this machine, else the one-line reason why not
    (a package to install, no GPU, no compiler). Cheap: nothing heavy is imported."""
    return {name: unavailable_reason(name) for name in BACKENDS}


def _import(module: str, backend: str) -> Any:
    return require(module, "fast", BackendError, what=f"backend {backend!r}")


# ---------------------------------------------------------------------------- torch backends
def _channels_last(module: nn.Module) -> Encoder:
    return lambda x: module(x.contiguous(memory_format=torch.channels_last))


def _autocast(module: nn.Module, dtype: torch.dtype) -> Encoder:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=dtype):
            out = module(x.contiguous(memory_format=torch.channels_last))
        return out.float()

    return run


def _compiled(module: nn.Module, **options: Any) -> Encoder:
    run = torch.compile(_channels_last(module), dynamic=False, **options)
    return lambda x: run(x)


# ---------------------------------------------------------------------------- CUDA
def _on_cuda(fn: Encoder) -> Encoder:
    """Run ``fn`` on the GPU; the embedding comes back on the input's device, float32."""

    def run(x: torch.Tensor) -> torch.Tensor:
        out = fn(x.to("cuda", torch.float32, non_blocking=True))
        return out.float().to(x.device)

    return run


class _CudaGraphEncoder:
    """Captures ``fn`` on a static input buffer once per input shape, then replays the graph:
    one launch per call instead of one per kernel (what helps small batches)."""

    def __init__(self, fn: Encoder, warmup: int = 3) -> None:
        self.fn = fn
        self.warmup = warmup
        self.graphs: Dict[Tuple[int, ...], Tuple[Any, torch.Tensor, torch.Tensor]] = {}

    def _capture(self, shape: Tuple[int, ...]) -> Tuple[Any, torch.Tensor, torch.Tensor]:
        static_in = torch.zeros(shape, device="cuda")
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(self.warmup):  # lazy initialisation (cuDNN plans) outside the capture
                self.fn(static_in)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.inference_mode():
            static_out = self.fn(static_in)
        return graph, static_in, static_out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        key = tuple(x.shape)
        if key not in self.graphs:
            self.graphs[key] = self._capture(key)
        graph, static_in, static_out = self.graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()


def _prepare_cuda(fused: nn.Module, backend: str) -> Encoder:
    torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
    module = fused.to("cuda")
    if backend == "cuda":
        return _on_cuda(module)
    module = module.to(memory_format=torch.channels_last)
    dtype = torch.float16 if backend == "cuda-fp16" else torch.bfloat16
    fn = _autocast(module, dtype)
    if backend == "cuda-graphs":
        return _on_cuda(_CudaGraphEncoder(fn))
    if backend == "cuda-compile":
        compiled = torch.compile(fn, mode="reduce-overhead", dynamic=False)

        def replay(x: torch.Tensor) -> torch.Tensor:
            torch.compiler.cudagraph_mark_step_begin()
            return compiled(x).clone()  # the graph's output buffer is reused by the next call

        return _on_cuda(replay)
    return _on_cuda(fn)


# ---------------------------------------------------------------------------- export (private)
_TMP_CACHE: Optional[Path] = None


def _default_cache_dir() -> Path:
    """A per-process temporary folder (removed at exit) shared by every exported backend, so
    ONNX Runtime, OpenVINO and int8 in one benchmark export the encoder once."""
    global _TMP_CACHE
    if _TMP_CACHE is None:
        _TMP_CACHE = Path(tempfile.mkdtemp(prefix="repvit-sam-backends-"))
        atexit.register(shutil.rmtree, _TMP_CACHE, True)
    return _TMP_CACHE


def _fingerprint(module: nn.Module, shape: Sequence[int]) -> str:
    """Identifies (architecture, weights, input shape): the name of the cached export."""
    h = hashlib.sha1(type(module).__qualname__.encode())
    h.update(repr(tuple(shape)).encode())
    for key, t in module.state_dict().items():
        h.update(key.encode())
        h.update(repr((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:20]


def _export_encoder_onnx(encoder: nn.Module, path: Path, shape: Sequence[int], opset: int = 17) -> Path:
    """Write ``encoder`` (fused, eval, CPU, fp32) as ONNX for a fixed input ``shape`` with input
    ``image`` and output ``image_embeddings``; atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    example = torch.zeros(tuple(shape))
    names = dict(input_names=["image"], output_names=["image_embeddings"], opset_version=opset)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            try:  # the TorchScript exporter: quiet, compact files, fine for these fixed-shape graphs
                torch.onnx.export(encoder, (example,), str(tmp), dynamo=False, **names)
            except TypeError:  # a torch whose export() no longer takes dynamo=
                torch.onnx.export(encoder, (example,), str(tmp), **names)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


def calibration_images(size: int, count: int = 8, seed: int = 0) -> List[np.ndarray]:
    """``count`` synthetic photo-like inputs, (1, 3, size, size) float32, preprocessed the way the
    predictor does (normalised with SAM's pixel mean/std, zero padding below a random aspect):
    smooth colour fields at several scales plus a few solid shapes. Used to calibrate int8 when no
    real images are given."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = []
    for _ in range(count):
        img = torch.zeros(1, 3, size, size)
        for cells, weight in ((2, 120.0), (8, 60.0), (32, 30.0), (size // 4, 12.0)):
            noise = torch.rand(1, 3, max(cells, 1), max(cells, 1), generator=g)
            img += weight * nn.functional.interpolate(noise, size=(size, size), mode="bilinear", align_corners=False)
        for _ in range(4):  # solid discs: edges, as in photos of objects
            cy, cx, r = (torch.rand(3, generator=g) * torch.tensor([size, size, size / 4])).tolist()
            colour = torch.rand(1, 3, 1, 1, generator=g) * 255
            disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r)[None, None]
            img = torch.where(disc, colour, img)
        img = (img.clamp(0, 255) - mean) / std
        h = int(size * (0.56 + 0.44 * float(torch.rand(1, generator=g))))
        img[:, :, h:] = 0  # the predictor pads below the resized image with zeros
        out.append(img.numpy().astype(np.float32))
    return out


def run_per_image(backend: str, runner: Callable[[Tuple[int, int]], Callable[[np.ndarray], np.ndarray]],
                  x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) images through ``runner((H, W))``, a batch-1 float32 graph for that size, one
    image at a time (what exported runtimes optimise); the outputs stacked on ``x``'s device."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"backend {backend!r} expects a (B, 3, H, W) image tensor, got {tuple(x.shape)}")
    run = runner((int(x.shape[2]), int(x.shape[3])))
    xs = x.detach().to("cpu", torch.float32).contiguous().numpy()
    outs = [run(np.ascontiguousarray(xs[i : i + 1])) for i in range(xs.shape[0])]
    return torch.from_numpy(np.concatenate(outs, axis=0)).to(x.device)


class _ExportedEncoder:
    """Runs a fixed-shape export of the fused encoder; exports once per new input (H, W) and
    runs the images of a batch one at a time (batch-1 graphs are what these runtimes optimise)."""

    def __init__(self, module: nn.Module, backend: str, make_runner: Callable[[Path, Tuple[int, ...]], Callable[[np.ndarray], np.ndarray]],
                 cache_dir: Optional[Path]) -> None:
        self.module = module
        self.backend = backend
        self.make_runner = make_runner
        self.cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        self.runners: Dict[Tuple[int, int], Callable[[np.ndarray], np.ndarray]] = {}

    def onnx_path(self, shape: Tuple[int, ...]) -> Path:
        path = self.cache_dir / f"encoder-{_fingerprint(self.module, shape)}.onnx"
        if not path.exists():
            _export_encoder_onnx(self.module, path, shape)
        return path

    def runner(self, hw: Tuple[int, int]) -> Callable[[np.ndarray], np.ndarray]:
        if hw not in self.runners:
            shape = (1, 3, *hw)
            self.runners[hw] = self.make_runner(self.onnx_path(shape), shape)
        return self.runners[hw]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return run_per_image(self.backend, self.runner, x)


def _threads(threads: Optional[int]) -> int:
    return int(threads) if threads else torch.get_num_threads()


def _onnxruntime_runner(threads: Optional[int]) -> Callable[[Path, Tuple[int, ...]], Callable[[np.ndarray], np.ndarray]]:
    ort = _import("onnxruntime", "onnxruntime")

    def make(path: Path, shape: Tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = _threads(threads)
        so.inter_op_num_threads = 1
        so.log_severity_level = 3  # errors only
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        return lambda a: session.run(None, {"image": a})[0]

    return make


_OV_CORE: Any = None


def _ov_core() -> Any:
    global _OV_CORE
    if _OV_CORE is None:
        _OV_CORE = _import("openvino", "openvino").Core()
    return _OV_CORE


def _ov_compile(model: Any, precision: str, threads: Optional[int]) -> Callable[[np.ndarray], np.ndarray]:
    """OpenVINO on the CPU, tuned for one image at a time: the latency hint, our thread count,
    and an explicit inference precision (``f32`` or ``bf16``: OpenVINO would otherwise pick bf16
    by itself on some CPUs)."""
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": _threads(threads), "INFERENCE_PRECISION_HINT": precision}
    compiled = _ov_core().compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    output = compiled.output(0)
    return lambda a: np.asarray(request.infer([a])[output])


def _openvino_runner(precision: str, threads: Optional[int]) -> Callable[[Path, Tuple[int, ...]], Callable[[np.ndarray], np.ndarray]]:
    return lambda path, shape: _ov_compile(str(path), precision, threads)


def _int8_runner(threads: Optional[int], calibration: Optional[Iterable[Any]], calibration_size: int,
                 transformer: Optional[bool], module: nn.Module) -> Callable[[Path, Tuple[int, ...]], Callable[[np.ndarray], np.ndarray]]:
    ov = _import("openvino", "int8")
    nncf = _import("nncf", "int8")
    if transformer is None:  # attention blocks: keep softmax & co. in float (NNCF's transformer scheme)
        transformer = any(isinstance(m, nn.MultiheadAttention) or "Attention" in type(m).__name__ for m in module.modules())

    def make(path: Path, shape: Tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
        if calibration is None:
            data = [np.ascontiguousarray(d[..., : shape[-2], : shape[-1]]) for d in calibration_images(max(shape[-2:]), count=calibration_size)]
        else:
            data = [torch.as_tensor(c).detach().to("cpu", torch.float32).reshape(shape).numpy() for c in calibration]
        if not data:
            raise BackendError("int8: the calibration set is empty; pass some preprocessed images")
        digest = hashlib.sha1(b"".join(d.tobytes()[:: max(1, d.size // 4096)] for d in data)).hexdigest()[:12]
        xml = path.with_name(f"{path.stem}-int8-{digest}-{'t' if transformer else 'c'}.xml")
        if not xml.exists():
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):  # NNCF's progress bars
                quantized = nncf.quantize(
                    _ov_core().read_model(str(path)),
                    nncf.Dataset(data),
                    subset_size=len(data),
                    fast_bias_correction=True,
                    model_type=nncf.ModelType.TRANSFORMER if transformer else None,
                )
            tmp = xml.with_name(f".{xml.stem}.{os.getpid()}.tmp.xml")
            ov.save_model(quantized, str(tmp), compress_to_fp16=False)
            os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
            os.replace(tmp, xml)
        # Quantised convolutions run in int8; what NNCF left in float runs in bf16 where the CPU has it.
        bf16 = "BF16" in _ov_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        return _ov_compile(str(xml), "bf16" if bf16 else "f32", threads)

    return make


# ---------------------------------------------------------------------------- entry point
def prepare_encoder(
    encoder: nn.Module,
    backend: str = "fused",
    *,
    threads: Optional[int] = None,
    cache_dir: Optional[str | os.PathLike] = None,
    calibration: Optional[Iterable[Any]] = None,
    calibration_size: int = 8,
    transformer: Optional[bool] = None,
) -> Encoder:
    """``encoder`` in the given form. The module passed in is never modified (fusing copies).

    threads: intra-op threads for ONNX Runtime / OpenVINO (default: ``torch.get_num_threads()``).
    cache_dir: where exported ONNX / int8 OpenVINO files are kept (default: a temporary folder
    for this process); files are named by a hash of the weights and input shape, so a later
    call with the same encoder reuses them. calibration: preprocessed (1, 3, S, S) images for
    ``int8`` (default: ``calibration_size`` synthetic ones, see ``calibration_images``).
    transformer: quantise with NNCF's transformer scheme (default: when the encoder has
    attention blocks). Exported backends are prepared now for the encoder's ``img_size`` and
    lazily for any other input size.
    """
    info = _check(backend)
    if backend == "eager":
        return encoder
    reason = unavailable_reason(backend)
    if reason is not None:
        raise BackendError(reason)
    fused = fuse_model(encoder)  # a copy, in eval mode
    if info.device == "cuda":
        return _prepare_cuda(fused, backend)
    fused = fused.to("cpu")
    if backend == "fused":
        return fused
    if backend in ("fused-cl", "bf16", "compile"):
        fused = fused.to(memory_format=torch.channels_last)
        if backend == "fused-cl":
            return _channels_last(fused)
        if backend == "bf16":
            return _autocast(fused, torch.bfloat16)
        return _compiled(fused)
    fused = fused.float()
    if backend in MOBILE_BACKENDS:
        from .mobile_backends import prepare_mobile

        return prepare_mobile(fused, backend, threads=threads, cache_dir=cache_dir, calibration=calibration, calibration_size=calibration_size)
    if backend == "onnxruntime":
        make = _onnxruntime_runner(threads)
    elif backend in ("openvino", "openvino-bf16"):
        make = _openvino_runner("bf16" if backend.endswith("bf16") else "f32", threads)
    else:
        make = _int8_runner(threads, calibration, calibration_size, transformer, fused)
    exported = _ExportedEncoder(fused, backend, make, Path(cache_dir) if cache_dir is not None else None)
    size = getattr(encoder, "img_size", None)
    if isinstance(size, int):
        exported.runner((size, size))
    return exported
