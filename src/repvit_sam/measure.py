"""Measuring primitives of ``repvit-sam bench``: wall time of repeated calls, peak memory growth
(resident memory on the CPU, allocated memory on CUDA), GFLOP counted by torch's flop counter,
the machine's matrix-multiply peaks, and fidelity (cosine, relative error) against a reference.
Torch is imported inside the functions."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Mapping, Optional, Sequence

if TYPE_CHECKING:
    import torch
    from torch import nn


def count_gflop(module: "nn.Module", input_shape: Sequence[int]) -> float:
    """GFLOP of one forward pass of ``module`` on an input of ``input_shape``, counted by
    ``torch.utils.flop_counter.FlopCounterMode`` (2 x multiply-accumulates of convolutions and
    matrix products; element-wise work is not counted). Runs on a copy on the meta device (no
    arithmetic is done), falling back to a real forward pass for ops that have no meta kernel."""
    import copy

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    def count(m: "nn.Module", x: "torch.Tensor") -> float:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            m(x)
        return counter.get_total_flops() / 1e9

    try:
        meta = copy.deepcopy(module).to("meta")
        return count(meta, torch.empty(tuple(input_shape), device="meta"))
    except (NotImplementedError, RuntimeError):
        device = next(module.parameters()).device
        return count(module, torch.zeros(tuple(input_shape), device=device))


def timed(fn: Callable[[], Any], runs: int, warmup: int, sync: Callable[[], None] = lambda: None) -> Dict[str, Any]:
    """Call ``fn`` ``warmup`` times, then ``runs`` timed times; the last output is kept."""
    import torch

    out = None
    with torch.inference_mode():
        for _ in range(warmup):
            out = fn()
        sync()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            out = fn()
            sync()
            times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "out": out}


def matmul_peak(precision: str, n: int = 2048, reps: int = 3, device: str = "cpu") -> Optional[float]:
    """GFLOP/s of the best of ``reps`` (n x n) @ (n x n) products in ``precision`` ("fp32", "bf16",
    "fp16" or "int8") on ``device``: the machine's practical matrix-multiply peak. int8 on the CPU
    uses ONNX Runtime's MatMulInteger (u8 x s8, the kernels int8 inference uses), else torch._int_mm;
    None when the precision cannot be measured here."""
    import torch

    flop = 2.0 * n**3
    if precision == "int8":
        return _int8_peak(n, reps, device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if device == "cpu" and precision == "fp16":
        return None
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - t0)
    return flop / best / 1e9


def _int8_peak(n: int, reps: int, device: str) -> Optional[float]:
    import numpy as np
    import torch

    flop = 2.0 * n**3
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "int8_matmul",
            [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n]), helper.make_tensor_value_info("B", TensorProto.INT8, [n, n])],
            [helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])],
        )
        so = ort.SessionOptions()
        so.intra_op_num_threads = torch.get_num_threads()
        # IR 8 (opset 17's): a newer onnx writes a newer IR by default than an older runtime reads
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        feed = {"A": rng.integers(0, 255, (n, n), dtype=np.uint8), "B": rng.integers(-127, 127, (n, n), dtype=np.int8)}
        call: Callable[[], Any] = lambda: session.run(None, feed)
    except ImportError:
        if device != "cpu" or not hasattr(torch, "_int_mm"):
            return None
        a = torch.randint(-127, 127, (n, n), dtype=torch.int8)
        b = torch.randint(-127, 127, (n, n), dtype=torch.int8)
        call = lambda: torch._int_mm(a, b)
    call()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
    return flop / best / 1e9


def _rss_kb(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _release_free_memory() -> None:
    """Give freed heap memory back to the OS (glibc keeps it otherwise, hiding later growth)."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextlib.contextmanager
def peak_memory(device: str = "cpu") -> Iterator[Dict[str, Optional[float]]]:
    """Measures the peak growth of memory (MB) during the block into ``result["peak_mb"]``:
    resident memory of this process on the CPU, allocated memory on a CUDA device."""
    import torch

    result: Dict[str, Optional[float]] = {"peak_mb": None}
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        yield result
        torch.cuda.synchronize()
        result["peak_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
        return
    _release_free_memory()
    base = _rss_kb("VmRSS")
    reset = False
    if base is not None:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset the high-water mark VmHWM to the current RSS
            reset = True
        except OSError:
            pass
    if reset:
        yield result
        peak = _rss_kb("VmHWM")
        result["peak_mb"] = None if peak is None or base is None else max(0, peak - base) / 1024
        return
    with _sampled_rss() as sampled:  # no /proc: sample the RSS in a thread
        yield result
    result["peak_mb"] = sampled.get("peak_mb")


@contextlib.contextmanager
def _sampled_rss(interval: float = 0.002) -> Iterator[Dict[str, Optional[float]]]:
    import threading

    out: Dict[str, Optional[float]] = {"peak_mb": None}
    try:
        import psutil
    except ImportError:
        yield out
        return
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            stop.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        out["peak_mb"] = (peak[0] - base) / 2**20


def compare(out: "torch.Tensor", ref: "torch.Tensor") -> Dict[str, float]:
    import torch

    a = out.detach().float().cpu().flatten().double()
    b = ref.detach().float().cpu().flatten().double()
    return {
        "cosine": float(torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-300)),
        "rel_err": float((a - b).norm() / b.norm().clamp_min(1e-300)),
    }


def machine_info(threads: int, matmul_n: int, with_cuda: bool) -> Dict[str, Any]:
    """This machine, library versions and its measured matrix-multiply peaks (GFLOP/s)."""
    import datetime
    import importlib.metadata
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    versions = {}
    for pkg in ("torch", "onnxruntime", "openvino", "nncf"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[pkg] = importlib.metadata.version(pkg)
    info: Dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads,
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "gpu": torch.cuda.get_device_name(0) if with_cuda else None,
    }
    info.update(matmul_peaks(matmul_n, with_cuda))
    return info


def matmul_peaks(n: int, with_cuda: bool) -> Dict[str, Dict[str, Optional[float]]]:
    """``{"matmul_gflops": {precision: GFLOP/s}}`` on the CPU, plus ``"cuda_matmul_gflops"``."""
    peaks = {"matmul_gflops": {p: matmul_peak(p, n) for p in ("fp32", "bf16", "int8")}}
    if with_cuda:
        peaks["cuda_matmul_gflops"] = {p: matmul_peak(p, max(n, 4096), device="cuda") for p in ("fp32", "bf16", "fp16")}
    return peaks


def update_peaks(machine: Dict[str, Any], later: Mapping[str, Mapping[str, Optional[float]]]) -> None:
    for key, values in later.items():
        old = machine.setdefault(key, {})
        for precision, value in values.items():
            if value is not None and (old.get(precision) is None or value > old[precision]):
                old[precision] = value
