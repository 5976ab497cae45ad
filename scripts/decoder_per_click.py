"""Decoder per click on this CPU, one run: arithmetic (torch.utils.flop_counter) and median time
of the on-device decoder graph (eager, 16 and 4 point slots), of FastDecoder (per-image state
kept) and of the exported ExecuTorch / LiteRT decoder files, with this CPU's fp32 matmul peak:
the floor any decoder of that arithmetic can reach here.

    python scripts/decoder_per_click.py [THREADS]      # RepViT-SAM, random weights, 1024 px
"""
import statistics, sys, tempfile, time
from pathlib import Path
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from repvit_sam import build_sam
from repvit_sam.bench_mobile import _decoder_ms
from repvit_sam.export.manifest import pad_prompt
from repvit_sam.export.mobile import MobilePromptDecoder
from repvit_sam.inference.fast_decoder import FastDecoder
from repvit_sam.measure import matmul_peak

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.set_num_threads(threads)
model = build_sam("repvit").eval()
s = model.img_size
e = model.prompt_encoder.image_embedding_size
emb = torch.randn(1, 256, *e)

def med(fn, runs=15, warm=3):
    for _ in range(warm): fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter(); fn(); ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)

rows = {}
for P in (16, 4):
    dec = MobilePromptDecoder(model, max_points=P).eval()
    coords, labels = pad_prompt(np.array([[s * 0.4, s * 0.3], [0.0, 0.0]]), np.array([1.0, -1.0]), P)
    args = (emb, torch.from_numpy(coords), torch.from_numpy(labels), torch.zeros(1, 1, 4 * e[0], 4 * e[1]), torch.zeros(1))
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            dec(*args)
        rows[f"mobile decoder graph, eager, {P} slots"] = (fc.get_total_flops() / 1e9, med(lambda: dec(*args)))
fd = FastDecoder(model)
with torch.no_grad():
    fd.set_image(emb)
    pts = (torch.tensor([[[s * 0.4, s * 0.3], [0.0, 0.0]]]), torch.tensor([[1, -1]], dtype=torch.int))
    sparse, dense = model.prompt_encoder(points=pts, boxes=None, masks=None)
    with FlopCounterMode(display=False) as fc:
        fd(sparse, None, True)
    rows["FastDecoder (per-image state kept), 3 masks"] = (fc.get_total_flops() / 1e9, med(lambda: fd(sparse, None, True)))
with tempfile.TemporaryDirectory() as tmp:
    for rt in ("executorch", "litert"):
        try:
            rows[f"{rt} decoder file, 16 slots"] = (None, _decoder_ms(model, rt, Path(tmp) / rt, 15, 3))
        except Exception as ex:  # noqa: BLE001 - the row says why
            rows[f"{rt} decoder file"] = (None, f"failed: {ex}")
peak = matmul_peak("fp32")
print(f"threads {threads}; fp32 matmul peak {peak:.1f} GFLOP/s (2048^2)")
print("| decoder per click | GFLOP | ms | GFLOP/s reached |\n|---|--:|--:|--:|")
for k, (g, ms) in rows.items():
    rate = f"{g / ms * 1e3:.0f}" if g and isinstance(ms, float) else ""
    print(f"| {k} | {'' if g is None else f'{g:.2f}'} | {ms if isinstance(ms, str) else f'{ms:.1f}'} | {rate} |")
