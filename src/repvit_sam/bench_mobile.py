"""``repvit-sam bench --task mobile``: the on-device runtimes (ExecuTorch and LiteRT on XNNPACK)
measured as an app uses them, beside the encoder table's ``executorch*`` / ``litert*`` rows.

For each model and runtime, fp32 and int8:

* ``file_mb``: the encoder file's size;
* ``memory_mb``: peak resident memory of a fresh process that loads the encoder file and runs it
  twice, over what the process held before loading (runtime imported, input allocated): weights
  plus the runtime's activation arena and workspaces, as a phone would need for the encoder;
* ``decoder_ms``: one click (a point and SAM's padding point) through the decoder file on a
  stored embedding, median of ``--runs`` calls: the per-click cost in an app (fp32 decoder);
* int8 rows: ``cosine`` of the embedding and ``mask_iou`` (mean over a 4 x 4 grid of clicks on
  scikit-image's coffee photo, best-of-3 masks compared) against the same runtime's fp32; the int8
  files calibrate on `--calibration DIR` (up to 32 images) or on the bundled sample photos.

``checks`` compares with the issue's targets: fp32 encoder within 1.3x of the fastest fp32
backend in the same run, int8 <= 0.6x its own fp32, decoder <= 15 ms per click, int8 mask IoU
>= 0.95 (needs ``--task encoder`` in the same run for the times).

``python -m repvit_sam.bench_mobile --memory RUNTIME FILE`` is the measuring subprocess.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

RUNTIMES = {"executorch": ("executorch", "executorch-int8"), "litert": ("litert", "litert-int8")}
TARGETS = {"fp32_vs_fastest": 1.3, "int8_vs_fp32": 0.6, "decoder_ms": 15.0, "int8_mask_iou": 0.95}


# ---------------------------------------------------------------------------- memory (subprocess)
def _rss_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def _memory_child(runtime: str, path: str) -> Dict[str, float]:
    """In a fresh process: import the runtime, then load ``path`` and run it twice on zeros;
    peak RSS over the RSS before loading."""
    import numpy as np

    if runtime == "executorch":
        import torch
        from executorch.runtime import Runtime

        rt = Runtime.get()
        program_meta = rt.load_program(Path(path))  # the program header: input shapes
        meta = program_meta.metadata("forward")
        shapes = [list(meta.input_tensor_meta(i).sizes()) for i in range(meta.num_inputs())]
        inputs = [torch.zeros(s) for s in shapes]
        del program_meta
        base = _rss_kb("VmRSS")
        _reset_hwm()
        method = rt.load_program(Path(path)).load_method("forward")
        loaded = _rss_kb("VmRSS")
        for _ in range(2):
            method.execute(inputs)
    else:
        from ai_edge_litert.interpreter import Interpreter

        probe = Interpreter(model_path=path).get_signature_runner()
        feeds = {k: np.zeros(d["shape"], d["dtype"]) for k, d in probe.get_input_details().items()}
        del probe
        base = _rss_kb("VmRSS")
        _reset_hwm()
        runner = Interpreter(model_path=path, num_threads=os.cpu_count()).get_signature_runner()
        loaded = _rss_kb("VmRSS")
        for _ in range(2):
            runner(**feeds)
    peak = _rss_kb("VmHWM")
    return {"memory_mb": (peak - base) / 1024, "loaded_mb": (loaded - base) / 1024}


def _reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := current RSS


def measure_memory(runtime: str, path: os.PathLike, timeout: float = 1200) -> Dict[str, Optional[float]]:
    """Peak memory (MB) of loading and running the model file ``path`` in a fresh process."""
    proc = subprocess.run([sys.executable, "-m", "repvit_sam.bench_mobile", "--memory", runtime, str(path)],
                          capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"memory probe failed: {tail}")
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------- decoder per click
def _decoder_ms(model: Any, runtime: str, folder: Path, runs: int, warmup: int) -> float:
    import numpy as np

    from .export.manifest import pad_prompt

    if runtime == "executorch":  # the decoder file alone: what an app calls per click
        import torch

        from .export.executorch import ExecuTorchModule, export_executorch

        path = export_executorch(model, folder, name="bench", encoder=False)["decoder"]
        module = ExecuTorchModule(path)
        call = lambda feeds: module(*(torch.from_numpy(feeds[k]) for k in feeds))  # noqa: E731
    else:
        from .export.tflite import export_tflite
        from .mobile_runtime import litert_runner

        run = litert_runner(export_tflite(model, folder, name="bench", encoder=False)["decoder"], os.cpu_count())
        call = lambda feeds: run(**feeds)  # noqa: E731
    e = model.prompt_encoder.image_embedding_size
    s = model.img_size
    rng = np.random.default_rng(0)
    coords, labels = pad_prompt(np.array([[s * 0.4, s * 0.3], [0.0, 0.0]]), np.array([1.0, -1.0]), 16)
    feeds = {
        "image_embeddings": rng.standard_normal((1, model.prompt_encoder.embed_dim, e[0], e[1])).astype(np.float32),
        "point_coords": coords, "point_labels": labels,
        "mask_input": np.zeros((1, 1, 4 * e[0], 4 * e[1]), np.float32), "has_mask_input": np.zeros(1, np.float32),
    }
    for _ in range(warmup):
        call(feeds)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call(feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


# ---------------------------------------------------------------------------- int8 fidelity
def _int8_fidelity(model: Any, fp32_backend: str, int8_backend: str, calibration: Optional[List[Any]] = None,
                   cache_dir: Optional[Path] = None) -> Dict[str, float]:
    """Embedding cosine and mean mask IoU (4 x 4 grid of clicks on the coffee photo, the best
    of the 3 candidates by predicted IoU) of ``int8_backend`` (calibrated on ``calibration``, or
    on its default set) against ``fp32_backend``."""
    import numpy as np

    from .bench import prepare_options
    from .export.mobile import sample_photos
    from .inference.predictor import SamPredictor

    image = sample_photos()[1]  # coffee
    a = SamPredictor(model, backend=fp32_backend, backend_options=prepare_options(None, cache_dir) or None)
    b = SamPredictor(model, backend=int8_backend, backend_options=prepare_options(calibration, cache_dir) or None)
    a.set_image(image)
    b.set_image(image)
    ea, eb = a.get_image_embedding().double().flatten(), b.get_image_embedding().double().flatten()
    cosine = float(ea @ eb / (ea.norm() * eb.norm()))
    h, w = image.shape[:2]
    ious = []
    for y in np.linspace(0.15, 0.85, 4) * h:
        for x in np.linspace(0.15, 0.85, 4) * w:
            pt, lab = np.array([[x, y]]), np.array([1])
            ma, sa, _ = a.predict(pt, lab)
            mb, _, _ = b.predict(pt, lab)
            k = int(np.argmax(sa))
            union = np.logical_or(ma[k], mb[k]).sum()
            ious.append(float(np.logical_and(ma[k], mb[k]).sum() / union) if union else 1.0)
    return {"cosine": cosine, "mask_iou": float(np.mean(ious))}


# ---------------------------------------------------------------------------- the task
def bench_mobile(models: Mapping[str, Any], *, runs: int = 5, warmup: int = 1, threads: Optional[int] = None,
                 encoder_rows: Sequence[Mapping[str, Any]] = (), progress: bool = True,
                 calibration: Optional[Tuple[List[Any], str]] = None, cache_dir: Optional[Path] = None) -> List[Dict[str, Any]]:
    """One row per model, runtime and precision (see the module docstring); a runtime that is
    not installed or fails gets a row whose ``note`` says why. ``calibration``: (RGB uint8
    images, a description) for the int8 files (default: the bundled sample photos)."""
    import tempfile

    from tqdm import tqdm

    from .backends import available_backends, prepare_encoder
    from .bench import calibration_for, prepare_options

    available = available_backends()
    rows: List[Dict[str, Any]] = []
    calibs: Dict[str, Any] = {}
    jobs = [(m, r) for m in models for r in RUNTIMES]
    bar = tqdm(jobs, desc="bench mobile", file=sys.stderr, disable=not progress, unit="job")
    with tempfile.TemporaryDirectory(prefix="repvit-sam-bench-mobile-") as scratch:
        for model_name, runtime in bar:
            bar.set_postfix_str(f"{model_name} {runtime}")
            model = models[model_name].eval()
            size = model.img_size
            fp32_backend, int8_backend = RUNTIMES[runtime]
            base = {"model": model_name, "runtime": runtime, "file_mb": None, "memory_mb": None, "loaded_mb": None,
                    "decoder_ms": None, "cosine": None, "mask_iou": None, "note": ""}
            reason = available[fp32_backend]
            if reason is not None:
                rows += [dict(base, precision=p, note=f"unavailable: {reason}") for p in ("fp32", "int8")]
                continue
            decoder_ms: Optional[float] = None
            try:
                decoder_ms = _decoder_ms(model, runtime, Path(scratch) / f"{model_name}-{runtime}", runs, warmup)
            except Exception as e:  # noqa: BLE001 - the row says why
                base["note"] = f"decoder failed: {_one_line(e)}"
            if model_name not in calibs:  # the same inputs for both runtimes
                calibs[model_name] = calibration_for(model, calibration)
            calib = calibs[model_name]
            for precision, backend in (("fp32", fp32_backend), ("int8", int8_backend)):
                row = dict(base, precision=precision, decoder_ms=decoder_ms)
                if precision == "int8":
                    row["calibration"] = calibration[1] if calibration is not None else "the bundled sample photos"
                try:
                    options = prepare_options(calib if precision == "int8" else None, cache_dir)
                    enc = prepare_encoder(model.image_encoder, backend, threads=threads, **options)
                    path = enc.paths[(size, size)]
                    row["file_mb"] = path.stat().st_size / 2**20
                    row.update(measure_memory(runtime, path))
                    if precision == "int8":
                        row.update(_int8_fidelity(model, fp32_backend, int8_backend, calib, cache_dir))
                except Exception as e:  # noqa: BLE001
                    row["note"] = (row["note"] + "; " if row["note"] else "") + f"failed: {_one_line(e)}"
                rows.append(row)
    _checks(rows, encoder_rows)
    return rows


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _checks(rows: List[Dict[str, Any]], encoder_rows: Sequence[Mapping[str, Any]]) -> None:
    """Fill ``encoder_ms``, ``x_fastest_fp32`` / ``x_own_fp32`` and ``checks`` (target: verdict)."""
    times = {(r["model"], r["backend"]): r.get("median_ms") for r in encoder_rows}
    for row in rows:
        backend = RUNTIMES[row["runtime"]][0 if row["precision"] == "fp32" else 1]
        row["encoder_ms"] = ms = times.get((row["model"], backend))
        checks: Dict[str, str] = {}
        fp32 = [r.get("median_ms") for r in encoder_rows if r["model"] == row["model"] and r.get("precision") == "fp32"
                and r.get("device") == "cpu" and r.get("median_ms")]
        if ms and row["precision"] == "fp32" and fp32:
            row["x_fastest_fp32"] = ratio = ms / min(fp32)
            checks["fp32 within 1.3x of fastest fp32"] = f"{'yes' if ratio <= TARGETS['fp32_vs_fastest'] else 'NO'} ({ratio:.2f}x)"
        own = times.get((row["model"], RUNTIMES[row["runtime"]][0]))
        if ms and row["precision"] == "int8" and own:
            row["x_own_fp32"] = ratio = ms / own
            checks["int8 <= 0.6x fp32"] = f"{'yes' if ratio <= TARGETS['int8_vs_fp32'] else 'NO'} ({ratio:.2f}x)"
        if row["decoder_ms"] is not None and row["precision"] == "fp32":
            ok = row["decoder_ms"] <= TARGETS["decoder_ms"]
            checks["decoder <= 15 ms"] = f"{'yes' if ok else 'NO'} ({row['decoder_ms']:.1f} ms)"
        if row["mask_iou"] is not None:
            ok = row["mask_iou"] >= TARGETS["int8_mask_iou"]
            checks["int8 mask IoU >= 0.95"] = f"{'yes' if ok else 'NO: int8 breaks masks'} ({row['mask_iou']:.3f})"
        row["checks"] = checks


def markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    def f(v: Any, spec: str) -> str:
        return "–" if v is None else format(v, spec)

    lines = [
        "On-device runtimes (XNNPACK): encoder file, peak memory of a process that loads and runs it (weights + arena), "
        "decoder per click (fp32), int8 against fp32"
        + next((f" (int8 calibrated on {r['calibration']})" for r in rows if r.get("calibration")), "") + ":",
        "",
        "| model | runtime | precision | encoder ms | file MB | memory MB | decoder ms/click | cosine vs fp32 | mask IoU vs fp32 | checks | note |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|---|---|",
    ]
    for r in rows:
        checks = "; ".join(f"{k}: {v}" for k, v in r.get("checks", {}).items())
        lines.append(
            f"| {r['model']} | {r['runtime']} | {r['precision']} | {f(r.get('encoder_ms'), '.0f')} | {f(r['file_mb'], '.1f')} "
            f"| {f(r['memory_mb'], '.0f')} | {f(r['decoder_ms'], '.1f')} | {f(r['cosine'], '.5f')} | {f(r['mask_iou'], '.3f')} "
            f"| {checks} | {r['note']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--memory":
        print(json.dumps(_memory_child(sys.argv[2], sys.argv[3])))
        raise SystemExit(0)
    raise SystemExit("usage: python -m repvit_sam.bench_mobile --memory executorch|litert FILE (or: repvit-sam bench --task mobile)")
