"""``repvit-sam bench``: image-encoder latency of every backend side by side, measured in one run
so that the ratios are comparable, plus the mask decoder's latency per prompt.

    repvit-sam bench [--models repvit vit_t] [--backends eager bf16 openvino-bf16 ...]
                     [--runs 5] [--warmup 1] [--size 1024] [--threads N] [--json PATH]
    python -m repvit_sam.bench ...            (the same)

For each model and backend (see :mod:`repvit_sam.backends`): median / min / max latency over
``--runs`` calls after ``--warmup`` calls (every backend of a model is prepared and warmed up
first, then timed in ``--runs`` interleaved rounds, one call of each backend per round, so that
a shared machine's drifting speed meets every backend alike and the ratios hold; before
2026-11-30 each backend ran all its calls in a block), the time to prepare the backend (fuse, export,
compile, quantise; compilation that happens on the first call counts in the warm-up instead),
peak memory, the encoder's GFLOP (counted with ``torch.utils.flop_counter`` on the eager
encoder: 2 x multiply-accumulates of convolutions and matrix products), the fraction of the
machine's matrix-multiply peak this achieves (the peak is measured in the same run with large
matrix products in the backend's precision), and the embedding's cosine similarity and relative
error against ``eager`` (the original unfused fp32 computation, always run first: the reference).

Memory: ``peak_mb`` is the growth of the process's resident memory during the warm-up calls
(at least one) over what it was just before them (after the backend was prepared): the activations and
workspaces inference needs, not the weights. On Linux it is read from the kernel's high-water
mark (``VmHWM``, reset through ``/proc/self/clear_refs``); elsewhere sampled with psutil. On a
GPU it is the growth of ``torch.cuda.max_memory_allocated``.

Models get random weights (latency does not depend on their values; fidelity numbers do, a
little); ``--pretrained`` uses the official weights instead. CUDA backends add images/s at
``--gpu-batches`` (default 1 and 16) to the report.

Only argparse and pathlib are imported at module level (``repvit-sam --help`` stays light); the
measuring functions import torch when called. Tests and scripts can call :func:`benchmark` with
models they built themselves (e.g. tiny configurations).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .measure import compare, count_gflop, machine_info, matmul_peaks, peak_memory, timed, update_peaks
from .utils import one_line

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

Calibration = Tuple[List["np.ndarray"], str]  # RGB uint8 images and where they came from (--calibration)
TASKS = ("encoder", "decoder", "everything", "video", "mobile")
DEFAULT_MODELS = ("repvit", "vit_t")
RESULT_KEYS = ("model", "backend", "median_ms", "min_ms", "max_ms", "peak_mb", "gflop", "peak_fraction", "cosine", "rel_err")


# ---------------------------------------------------------------------------- command line
def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}")
        return value

    return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), metavar="NAME",
                   help=f"models to measure (default: {' '.join(DEFAULT_MODELS)})")
    p.add_argument("--backends", nargs="+", metavar="NAME",
                   help="image-encoder backends (default: every one available here); eager always runs first, as the reference")
    p.add_argument("--task", nargs="+", choices=TASKS, default=["encoder", "decoder"],
                   help="what to measure (default: encoder decoder); everything = the automatic mask generator; "
                        "video = tracking on a 480p clip; "
                   "mobile = ExecuTorch / LiteRT files: memory, decoder per click, int8 fidelity (repvit_sam.bench_mobile)")
    p.add_argument("--runs", type=_count(1), default=5, help="timed calls per measurement (default 5)")
    p.add_argument("--warmup", type=_count(0), default=1, help="untimed calls before them (default 1)")
    p.add_argument("--size", type=_count(16), default=1024, help="input side in pixels, a multiple of 16 (default 1024)")
    p.add_argument("--threads", type=_count(1), help="CPU threads for torch, ONNX Runtime and OpenVINO (default: torch's)")
    p.add_argument("--decoder-batches", nargs="+", type=_count(1), default=[1, 64], metavar="B",
                   help="prompts per decoder call (default 1 64)")
    p.add_argument("--gpu-batches", nargs="+", type=_count(1), default=[1, 16], metavar="B",
                   help="batch sizes for images/s on CUDA backends (default 1 16)")
    p.add_argument("--pretrained", action="store_true", help="official weights (cached, or downloaded) instead of random ones")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results here (atomically)")
    p.add_argument("--calibration", type=Path, metavar="DIR",
                   help="the int8 backends (int8, executorch-int8, litert-int8) calibrate on up to 32 images from DIR, as "
                        "`export --calibration` does (default: each backend's own set: sample photos or synthetic noise)")
    p.add_argument("--cache-dir", type=Path, metavar="DIR",
                   help="keep the exported encoders (ONNX, OpenVINO int8, .pte, .tflite) in DIR and reuse them in later runs "
                        "(files are named by a hash of the weights, input size and calibration; default: a temporary folder)")
    from .bench_everything import MODES, FILTERS

    e = p.add_argument_group("--task everything (segment everything: reference vs fast paths, first model of --models)")
    e.add_argument("--modes", nargs="+", choices=sorted(MODES), default=["reference", "fast", "fast-bf16", "coarse-to-fine"],
                   help="generator modes (default: reference fast fast-bf16 coarse-to-fine)")
    e.add_argument("--image", help="image file (default: scikit-image's coffee photo, resized to --size)")
    e.add_argument("--points-per-side", type=_count(1), default=32, help="grid points per side (default 32)")
    e.add_argument("--filters", choices=sorted(FILTERS), default="default",
                   help="default: segment_anything's thresholds; none: every mask kept (the slow case)")
    from .video.bench import add_arguments as add_video_arguments

    add_video_arguments(p)


def _build_model(name: str, size: int, pretrained: bool) -> "nn.Module":
    """Model ``name`` with input side ``size``: random weights (seeded) or the official ones."""
    import dataclasses

    import torch

    from .config import VARIANTS, resolve_name
    from .registry import build_from_config

    key = resolve_name(name)
    if pretrained:
        from .hub import load_pretrained

        return load_pretrained(key)
    cfg = VARIANTS[key]
    if size != cfg.img_size:
        cfg = dataclasses.replace(
            cfg,
            encoder=dataclasses.replace(cfg.encoder, img_size=size),
            decoder=dataclasses.replace(cfg.decoder, image_embedding_size=size // 16),
        )
    torch.manual_seed(0)
    return build_from_config(cfg)


def run(args: argparse.Namespace) -> int:
    from .backends import BACKENDS, available_backends
    from .cli import UsageError
    from .config import resolve_name

    if args.size % 16:
        raise UsageError(f"bench: --size must be a multiple of 16, got {args.size}")
    if args.pretrained and args.size != 1024:
        raise UsageError("bench: --pretrained needs --size 1024 (the official weights' input size)")
    for name in args.models:
        try:
            resolve_name(name)
        except KeyError as e:
            raise UsageError(f"bench: {e.args[0]}") from None
    if args.backends:
        unknown = [b for b in args.backends if b not in BACKENDS]
        if unknown:
            raise UsageError(f"bench: unknown backend {unknown[0]!r}; choose from {', '.join(BACKENDS)}")
        backends = list(dict.fromkeys(args.backends))
    else:
        backends = [b for b, reason in available_backends().items() if reason is None]

    tasks = set(args.task)
    calibration = _calibration_images(args.calibration)
    report: Optional[Dict[str, Any]] = None
    if tasks & {"encoder", "decoder"}:
        models = {name: _build_model(name, args.size, args.pretrained) for name in args.models}
        report = benchmark(
            models,
            backends if "encoder" in tasks else [],
            runs=args.runs,
            warmup=args.warmup,
            size=args.size,
            threads=args.threads,
            decoder_batches=args.decoder_batches if "decoder" in tasks else [],
            gpu_batches=args.gpu_batches,
            calibration=calibration,
            cache_dir=args.cache_dir,
        )
        print(markdown(report))
        if args.json:
            from .utils import write_json_atomic

            write_json_atomic(args.json, report)
            print(f"wrote {args.json}", file=sys.stderr)
    if "mobile" in tasks:
        from . import bench_mobile

        models = {name: _build_model(name, args.size, args.pretrained) for name in args.models}
        rows = bench_mobile.bench_mobile(models, runs=args.runs, warmup=args.warmup, threads=args.threads,
                                         encoder_rows=report["results"] if report else (), calibration=calibration,
                                         cache_dir=args.cache_dir)
        print("\n" + bench_mobile.markdown(rows))
        if args.json:
            from .utils import write_json_atomic

            write_json_atomic(args.json, {**(report or {}), "mobile": rows})
    if "video" in tasks:
        from .video import bench as video_bench

        code = video_bench.main(args)
        if "everything" not in tasks:
            return code
    if "everything" in tasks:
        args.bench_report = report  # what the encoder/decoder tasks measured, for a combined report
        try:
            from . import bench_everything
        except ImportError:
            raise RuntimeError("bench --task everything needs repvit_sam.bench_everything, which this build does not have") from None
        return int(bench_everything.main(args))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m repvit_sam.bench ARGS`` is ``repvit-sam bench ARGS``."""
    from .cli import main as cli_main

    return cli_main(["bench", *(sys.argv[1:] if argv is None else argv)])


def _calibration_images(folder: Optional[Path]) -> Optional[Calibration]:
    """``--calibration DIR``: (its first images as RGB uint8, a description), or None; a missing or
    empty folder is a usage error."""
    if folder is None:
        return None
    from .cli import UsageError
    from .export.mobile import CALIBRATION_DEFAULT, ExportError, folder_images

    try:
        images = folder_images(folder, CALIBRATION_DEFAULT)
    except ExportError as e:
        raise UsageError(f"bench --calibration: {e}") from None
    return images, f"{len(images)} image(s) from {folder}"


def calibration_for(model: "nn.Module", calibration: Optional[Calibration]) -> Optional[List["torch.Tensor"]]:
    """The encoder inputs (1, 3, S, S) of ``calibration``'s images for ``model``, prepared as the
    predictor prepares an image; None (each backend's default set) without images."""
    if calibration is None:
        return None
    from .export.mobile import calibration_inputs

    return [c[0] for c in calibration_inputs(model, calibration[0], preprocess=False)]


def prepare_options(calibration: Optional[List["torch.Tensor"]], cache_dir: Optional[Path]) -> Dict[str, Any]:
    """``backends.prepare_encoder``'s keyword arguments for what was given (``calibration``:
    int8 backends only)."""
    return {k: v for k, v in (("calibration", calibration), ("cache_dir", cache_dir)) if v is not None}


def _prepare_row(model_name: str, backend: str, encoder: "nn.Module", x: "torch.Tensor", gflop: float, warmup: int, threads: int,
                 calibration: Optional[List["torch.Tensor"]] = None, cache_dir: Optional[Path] = None) -> Tuple[Dict[str, Any], Optional[Callable[[], Any]]]:
    """A result row for ``backend`` with the encoder prepared and warmed up (``max(warmup, 1)``
    calls, during which the peak memory is measured), and the timed call; (row, None) with a
    ``note`` when the backend is unavailable or fails."""
    import torch

    from .backends import INFO, prepare_encoder, unavailable_reason

    info = INFO[backend]
    row: Dict[str, Any] = {k: None for k in RESULT_KEYS}
    row.update(model=model_name, backend=backend, precision=info.precision, device=info.device, gflop=gflop,
               prepare_s=None, gflops=None, x_eager=None, note="", out=None)
    reason = unavailable_reason(backend)
    if reason is not None:
        row["note"] = f"unavailable: {reason}"
        return row, None
    cuda = info.device == "cuda"
    xin = x.to("cuda") if cuda else x
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def call() -> Any:
        out = fn(xin)
        sync()
        return out

    try:
        t0 = time.perf_counter()
        options = prepare_options(calibration if info.precision == "int8" else None, cache_dir)
        fn = prepare_encoder(encoder, backend, threads=threads, **options)
        row["prepare_s"] = time.perf_counter() - t0
        with peak_memory("cuda" if cuda else "cpu") as mem, torch.inference_mode():
            for _ in range(max(warmup, 1)):
                row["out"] = call()
        row["peak_mb"] = mem["peak_mb"]
    except Exception as e:  # a backend that cannot run this model here: the row says why
        row["note"] = f"failed: {one_line(e, with_type=True)}"
        row["out"] = None
        return row, None
    return row, call


def _time_interleaved(prepared: Sequence[Tuple[Dict[str, Any], Callable[[], Any]]], runs: int) -> None:
    """``runs`` rounds, each calling every prepared backend once in turn, into each row's
    median / min / max ms and last output. Interleaving makes the ratios between backends hold on
    a shared machine whose speed drifts during the run: every backend meets the same drift."""
    import torch

    times: List[List[float]] = [[] for _ in prepared]
    alive = [True] * len(prepared)
    with torch.inference_mode():
        for _ in range(runs):
            for i, (row, call) in enumerate(prepared):
                if not alive[i]:
                    continue
                try:
                    t0 = time.perf_counter()
                    row["out"] = call()
                    times[i].append((time.perf_counter() - t0) * 1e3)
                except Exception as e:  # noqa: BLE001 - the row says why
                    row.update(note=f"failed: {one_line(e, with_type=True)}", out=None)
                    alive[i] = False
    for (row, _), t, ok in zip(prepared, times, alive):
        if ok and t:
            row.update(median_ms=statistics.median(t), min_ms=min(t), max_ms=max(t))
            row["gflops"] = row["gflop"] / (row["median_ms"] / 1e3)


def _gpu_rows(model_name: str, encoder: "nn.Module", backend: str, size: int, batches: Sequence[int], runs: int, warmup: int) -> List[Dict[str, Any]]:
    import torch

    from .backends import prepare_encoder

    rows = []
    fn = prepare_encoder(encoder, backend)
    for b in batches:
        row: Dict[str, Any] = {"model": model_name, "backend": backend, "batch": b, "median_ms": None, "images_per_s": None, "note": ""}
        try:
            xb = torch.randn(b, 3, size, size, device="cuda")
            t = timed(lambda: fn(xb), runs, max(warmup, 1), torch.cuda.synchronize)
            row.update(median_ms=t["median_ms"], images_per_s=b / (t["median_ms"] / 1e3))
        except Exception as e:
            row["note"] = f"failed: {one_line(e, with_type=True)}"
        rows.append(row)
    return rows


DECODER_PATHS = ("module", "fast", "fast-bf16", "predict_torch")


def _decoder_rows(model_name: str, model: "nn.Module", size: int, batches: Sequence[int], runs: int, warmup: int) -> List[Dict[str, Any]]:
    """The mask decoder per prompt, one point per prompt, 3 masks each, on an image set once:

    * ``module``: prompt encoder + ``model.mask_decoder`` (the original computation), low-res logits;
    * ``fast`` / ``fast-bf16``: the same through :class:`FastDecoder` (fp32 / bf16), low-res logits;
    * ``predict_torch``: ``SamPredictor.predict_torch`` (fast decoder, masks upscaled to the image).
    """
    import numpy as np
    import torch

    from .inference.fast_decoder import FastDecoder
    from .inference.predictor import SamPredictor

    rng = np.random.default_rng(0)
    h, w = size * 3 // 4, size  # a 4:3 photo
    predictor = SamPredictor(model, backend="bf16")
    predictor.set_image(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    emb = predictor.get_image_embedding()
    pe, md = model.prompt_encoder, model.mask_decoder
    fast = {"fast": FastDecoder(model), "fast-bf16": FastDecoder(model, dtype=torch.bfloat16)}
    for dec in fast.values():
        dec.set_image(emb)
    rows = []
    for b in batches:
        pts = torch.as_tensor(rng.uniform([0, 0], [w, h], (b, 1, 2)), dtype=torch.float32)
        coords = predictor.transform.apply_coords_torch(pts, (h, w))
        labels = torch.ones(b, 1, dtype=torch.int64)

        def module_path():
            sparse, dense = pe(points=(coords, labels), boxes=None, masks=None)
            return md(emb, pe.get_dense_pe(), sparse, dense, True)

        def fast_path(dec):
            return lambda: dec(pe(points=(coords, labels), boxes=None, masks=None)[0], multimask_output=True)

        calls = {"module": module_path, "fast": fast_path(fast["fast"]), "fast-bf16": fast_path(fast["fast-bf16"]),
                 "predict_torch": lambda: predictor.predict_torch(coords, labels, multimask_output=True)}
        for path in DECODER_PATHS:
            t = timed(calls[path], runs, warmup)
            masks = t.pop("out")[0]
            rows.append({"model": model_name, "path": path, "batch": b, **t, "per_prompt_ms": t["median_ms"] / b,
                         "image": f"{w}x{h}", "masks": list(masks.shape)})
    return rows


def benchmark(
    models: Mapping[str, "nn.Module"],
    backends: Sequence[str],
    *,
    runs: int = 5,
    warmup: int = 1,
    size: int = 1024,
    threads: Optional[int] = None,
    decoder_batches: Sequence[int] = (1, 64),
    gpu_batches: Sequence[int] = (1, 16),
    matmul_n: int = 2048,
    progress: bool = True,
    calibration: Optional[Calibration] = None,
    cache_dir: Optional[Path] = None,
) -> Dict[str, Any]:
    """Measure ``models`` (name -> Sam model, its encoder's input side ``size``) on ``backends``.

    Returns ``{"machine", "settings", "results", "decoder", "gpu"}``: one result row per model and
    backend (eager first, the reference; a backend that is unavailable or fails gets a row whose
    ``note`` says why and whose numbers are None), one decoder row per model and batch, and images/s
    rows for CUDA backends at ``gpu_batches``. No backends -> no encoder rows. ``calibration``:
    (RGB uint8 images, a description) on which the int8 backends calibrate (default: their own).
    ``cache_dir``: where exported files are kept and found again (default: a temporary folder).
    """
    import torch
    from tqdm import tqdm

    from .backends import INFO

    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    try:
        order = (["eager"] if backends else []) + [b for b in backends if b != "eager"]
        cuda_backends = [b for b in order if INFO[b].device == "cuda" and torch.cuda.is_available()]
        machine = machine_info(threads, matmul_n, with_cuda=bool(cuda_backends))
        results: List[Dict[str, Any]] = []
        decoder: List[Dict[str, Any]] = []
        gpu: List[Dict[str, Any]] = []
        jobs = [(m, b) for m in models for b in order] + [(m, "decoder") for m in models if decoder_batches]
        bar = tqdm(total=len(jobs), desc="bench", file=sys.stderr, disable=not progress, unit="job")
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        for model_name in models:
            model = models[model_name]
            encoder = model.image_encoder.eval()
            gflop = count_gflop(encoder, (1, 3, size, size)) if order else 0.0
            calib = calibration_for(model, calibration) if any(INFO[b].precision == "int8" for b in order) else None
            prepared: List[Tuple[Dict[str, Any], Callable[[], Any]]] = []
            rows: List[Dict[str, Any]] = []
            for what in order:
                bar.set_postfix_str(f"{model_name} {what}")
                row, call = _prepare_row(model_name, what, encoder, x, gflop, warmup, threads, calib, cache_dir)
                rows.append(row)
                if call is not None:
                    prepared.append((row, call))
                bar.update()
            if prepared:
                bar.set_postfix_str(f"{model_name}: {runs} interleaved rounds")
                _time_interleaved(prepared, runs)
            ref_out = next((r["out"] for r in rows if r["backend"] == "eager" and r["out"] is not None), None)
            for row in rows:
                out = row.pop("out")
                if row["median_ms"] is None:
                    continue
                if row["backend"] == "eager":
                    row.update(cosine=1.0, rel_err=0.0)
                elif ref_out is not None and out is not None:
                    row.update(compare(out.float().cpu(), ref_out.float().cpu()))
            results += rows
            for what in order:
                if what in cuda_backends and gpu_batches:
                    gpu += _gpu_rows(model_name, encoder, what, size, gpu_batches, runs, warmup)
            if decoder_batches:
                bar.set_postfix_str(f"{model_name} decoder")
                decoder += _decoder_rows(model_name, model, size, decoder_batches, runs, warmup)
                bar.update()
        bar.close()
        if results:  # the peaks again at the end: the better of the two is the machine's (others may share it)
            update_peaks(machine, matmul_peaks(matmul_n, bool(cuda_backends)))
        for row in results:
            peak = machine["cuda_matmul_gflops" if row["device"] == "cuda" else "matmul_gflops"].get(row["precision"])
            row["peak_fraction"] = row["gflops"] / peak if row["gflops"] and peak else None
            base = next((r for r in results if r["model"] == row["model"] and r["backend"] == "eager"), None)
            if base and base["median_ms"] and row["median_ms"]:
                row["x_eager"] = row["median_ms"] / base["median_ms"]
    finally:
        torch.set_num_threads(old_threads)
    settings = {"size": size, "batch": 1, "runs": runs, "warmup": warmup, "decoder_batches": list(decoder_batches),
                "gpu_batches": list(gpu_batches) if gpu else [],
                "int8_calibration": calibration[1] if calibration is not None else "each backend's default set"}
    return {"machine": machine, "settings": settings, "results": results, "decoder": decoder, "gpu": gpu}


# ---------------------------------------------------------------------------- report
def _fmt(value: Any, spec: str, none: str = "–") -> str:
    return none if value is None else format(value, spec)


def markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown: a header line, then the encoder, GPU and decoder tables."""
    m, s = report["machine"], report["settings"]
    peaks = ", ".join(f"{k} {_fmt(v, '.0f')}" for k, v in m["matmul_gflops"].items())
    lines = [
        f"{m['cpu']}, {m['threads']} threads (load {_fmt(m.get('load_avg_1m'), '.1f')}); "
        f"matmul peak GFLOP/s: {peaks}; torch {m['versions'].get('torch')}; {m['date_utc']}",
    ]
    if report["results"]:
        lines += [
            "",
            f"Image encoder, {s['size']}x{s['size']}, batch 1, median of {s['runs']} runs after {s['warmup']} warm-up"
            + (f"; int8 calibrated on {s['int8_calibration']}" if any(r["precision"] == "int8" for r in report["results"])
               and s.get("int8_calibration") else "") + ":",
            "",
            "| model | backend | median ms | min ms | max ms | x eager | prepare s | peak MB | GFLOP | GFLOP/s | % of peak | cosine | rel. error | note |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
        ]
        for r in report["results"]:
            frac = None if r["peak_fraction"] is None else 100 * r["peak_fraction"]
            lines.append(
                f"| {r['model']} | {r['backend']} | {_fmt(r['median_ms'], '.1f')} | {_fmt(r['min_ms'], '.1f')} "
                f"| {_fmt(r['max_ms'], '.1f')} | {_fmt(r['x_eager'], '.2f')} | {_fmt(r['prepare_s'], '.1f')} "
                f"| {_fmt(r['peak_mb'], '.0f')} | {_fmt(r['gflop'], '.1f')} | {_fmt(r['gflops'], '.0f')} "
                f"| {_fmt(frac, '.0f')} ({r['precision']}) | {_fmt(r['cosine'], '.6f')} | {_fmt(r['rel_err'], '.1e')} | {r['note']} |"
            )
    if report["gpu"]:
        lines += ["", f"GPU throughput ({m['gpu']}):", "", "| model | backend | batch | median ms | images/s | note |", "|---|---|--:|--:|--:|---|"]
        for r in report["gpu"]:
            lines.append(f"| {r['model']} | {r['backend']} | {r['batch']} | {_fmt(r['median_ms'], '.1f')} | {_fmt(r['images_per_s'], '.1f')} | {r['note']} |")
    if report["decoder"]:
        lines += [
            "",
            "Mask decoder, one point per prompt, 3 masks each (module: the original MaskDecoder; fast / fast-bf16: "
            "FastDecoder; both low-res logits. predict_torch: the predictor, masks upscaled to the image):",
            "",
            "| model | path | prompts per call | median ms per call | min ms | max ms | ms per prompt |",
            "|---|---|--:|--:|--:|--:|--:|",
        ]
        for r in report["decoder"]:
            lines.append(
                f"| {r['model']} | {r['path']} | {r['batch']} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | {r['max_ms']:.1f} | {r['per_prompt_ms']:.2f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
