"""LiteRT decoder per click, fp32 against dynamic-range int8 (ai-edge-quantizer's
``dynamic_wi8_afp32``: int8 weights, activations quantized on the fly), timed interleaved in one
process, with the logits' relative error. RepViT-SAM, random weights, 1024 px, one click plus
SAM's padding point in 16 slots (as ``bench --task mobile`` feeds the decoder file).

    python scripts/decoder_int8_dynamic.py [THREADS] [ROUNDS]
"""
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from repvit_sam import build_sam
from repvit_sam.export import tflite
from repvit_sam.export.manifest import pad_prompt
from repvit_sam.mobile_runtime import litert_runner

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 15
torch.set_num_threads(threads)
torch.manual_seed(0)
model = build_sam("repvit").eval()
tmp = Path(tempfile.mkdtemp())
files = {"fp32": tflite.decoder_model(model, tmp=tmp)}


def dynamic(q, mods):
    from ai_edge_quantizer import recipe

    q.load_quantization_recipe(recipe.dynamic_wi8_afp32())


files["int8-dynamic"] = tflite._requantize(files["fp32"], tmp, dynamic)
runs = {}
for name, data in files.items():
    (tmp / f"{name}.tflite").write_bytes(data)
    runs[name] = litert_runner(str(tmp / f"{name}.tflite"), threads)
e, s = model.prompt_encoder.image_embedding_size, model.img_size
coords, labels = pad_prompt(np.array([[s * 0.4, s * 0.3], [0.0, 0.0]]), np.array([1.0, -1.0]), 16)
feeds = {"image_embeddings": np.random.default_rng(0).standard_normal((1, 256, e[0], e[1])).astype(np.float32),
         "point_coords": coords, "point_labels": labels,
         "mask_input": np.zeros((1, 1, 4 * e[0], 4 * e[1]), np.float32), "has_mask_input": np.zeros(1, np.float32)}
ref, got = runs["fp32"](**feeds), runs["int8-dynamic"](**feeds)
err = {k: float(np.linalg.norm(np.asarray(ref[k]) - np.asarray(got[k])) / np.linalg.norm(np.asarray(ref[k]))) for k in ref}
times = {k: [] for k in runs}
for _ in range(rounds):
    for name, run in runs.items():
        t = time.perf_counter()
        run(**feeds)
        times[name].append(time.perf_counter() - t)
print(f"threads {threads}, {rounds} interleaved rounds")
print("| LiteRT decoder | median ms per click | file MB |\n|---|--:|--:|")
for name, ts in times.items():
    print(f"| {name} | {1000 * sorted(ts)[len(ts) // 2]:.1f} | {len(files[name]) / 1e6:.1f} |")
print("relative L2 error of int8-dynamic against fp32:", {k: round(v, 4) for k, v in err.items()})
