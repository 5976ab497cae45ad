"""Image-encoder latency on this machine: eager (the original computation) vs fused vs
fused + channels_last, measured in one run so the ratios are comparable.

    python -m repvit_sam.bench [--models repvit vit_t] [--runs 5] [--size 1024] [--json PATH]

Random weights (latency does not depend on their values). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List

import torch
from torch import nn
from tqdm import tqdm

from .backends import prepare_encoder
from .registry import build_sam
from .utils import write_json_atomic

BACKENDS = ("eager", "fused", "fused-cl")


def prepare(encoder: nn.Module, backend: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The encoder in the given form, as a callable on a (B, 3, S, S) input."""
    return prepare_encoder(encoder, backend)


def time_encoder(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, runs: int, warmup: int = 1) -> Dict[str, float]:
    with torch.inference_mode():
        for _ in range(warmup):
            out = fn(x)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            out = fn(x)
            times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "out": out}  # type: ignore[dict-item]


def run(models: List[str], runs: int, size: int) -> List[Dict[str, object]]:
    rows: List[Dict[str, object]] = []
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    jobs = [(m, b) for m in models for b in BACKENDS]
    ref = {}
    encoders: Dict[str, nn.Module] = {}
    for model_name, backend in tqdm(jobs, desc="encoder latency", file=sys.stderr):
        if model_name not in encoders:  # one set of weights per model, shared by its backends
            torch.manual_seed(0)
            encoders = {model_name: build_sam(model_name).image_encoder.eval()}
        r = time_encoder(prepare(encoders[model_name], backend), x, runs)
        out = r.pop("out")
        if backend == "eager":
            ref[model_name] = out
        base = ref[model_name]
        rel = float((out.float() - base).norm() / base.norm())
        rows.append({"model": model_name, "backend": backend, **r, "rel_err": rel})
    for row in rows:
        eager = next(r for r in rows if r["model"] == row["model"] and r["backend"] == "eager")
        row["ratio_to_eager"] = row["median_ms"] / eager["median_ms"]  # type: ignore[operator]
    return rows


def markdown(rows: List[Dict[str, object]]) -> str:
    lines = ["| model | backend | median ms | min ms | max ms | x eager | rel. error vs eager |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['backend']} | {r['median_ms']:.0f} | {r['min_ms']:.0f} | {r['max_ms']:.0f} "
            f"| {r['ratio_to_eager']:.2f} | {r['rel_err']:.1e} |"
        )
    return "\n".join(lines)


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="image-encoder latency: eager vs fused vs fused+channels_last")
    ap.add_argument("--models", nargs="+", default=["repvit", "vit_t"])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args(argv)
    rows = run(a.models, a.runs, a.size)
    machine = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    print(f"{a.size}x{a.size}, batch 1, {a.runs} runs after 1 warm-up; {machine}")
    print(markdown(rows))
    if a.json:
        write_json_atomic(a.json, {"machine": machine, "results": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
