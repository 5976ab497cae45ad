"""Training throughput of the full-size student: steps/s of ``distill train`` (phase 1) and of
``finetune`` at a global batch of 8, on synthetic data, for a fixed small number of steps.
Prints one JSON line. Random weights (no downloads): the speed does not depend on them.

    python -m repvit_sam.train.gpu_bench --device cuda [--steps 30] [--work DIR]

Steps/s are measured between the first logged step after ``--warmup`` steps and the last one
(the trainer's ``time_s``), so start-up, data preparation and the first CUDA kernels' tuning
are not counted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import List


def _steps_per_s(run: Path, warmup: int) -> float:
    recs = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    recs = [r for r in recs if r["kind"] == "train" and r["step"] >= warmup]
    first, last = recs[0], recs[-1]
    return (last["step"] - first["step"]) / max(last["time_s"] - first["time_s"], 1e-9)


def main(argv: List[str] | None = None) -> int:
    import torch

    from ..cli import main as cli
    from ..registry import build_sam
    from ..synthetic import write_images

    p = argparse.ArgumentParser(prog="python -m repvit_sam.train.gpu_bench", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--student", default="repvit")
    p.add_argument("--teacher", default="vit_t", help="teacher whose embeddings phase 1 learns (default vit_t: quick to embed)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--work", type=Path)
    args = p.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="repvit_sam_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "synth"
    if not (data / "annotations.json").is_file():
        write_images(data, count=args.images, seed=0, size=(256, 256), quiet=True)
    torch.manual_seed(0)
    files = {}
    for name in {args.student, args.teacher}:
        files[name] = work / f"random_{name}.pt"
        if not files[name].is_file():
            torch.save(build_sam(name).state_dict(), files[name])
    common = ["--steps", args.steps, "--batch-size", args.batch_size, "--log-every", 1, "--checkpoint-every", 10_000,
              "--val-every", 10_000, "--workers", 4, "--device", args.device, "--bf16"]
    t0 = time.time()
    emb = work / "emb"
    argv_embed = ["distill", "embed", "--teacher", args.teacher, "--teacher-checkpoint", files[args.teacher],
                  "--images", data / "images", "--out", emb, "--workers", 2, "--device", args.device]
    argv_distill = ["distill", "train", "--embeddings", emb, "--images", data / "images", "--student", args.student,
                    "--out", work / "distill_run", "--no-verify", "--val-images", 0, *common]
    argv_finetune = ["finetune", "--data", data / "annotations.json", "--images", data / "images", "--model", args.student,
                     "--checkpoint", files[args.student], "-o", work / "finetune_run", "--val-count", 0, *common]
    for argv_ in (argv_embed, argv_distill, argv_finetune):
        code = cli([str(a) for a in argv_])
        if code != 0:
            print(json.dumps({"error": f"repvit-sam {' '.join(map(str, argv_))} exited {code}"}))
            return code
    dev = torch.device(args.device)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "student": args.student,
        "batch_size": args.batch_size,
        "input": "1024x1024 (256x256 synthetic images upscaled by the model's preprocessing)",
        "precision": "bf16 autocast",
        "steps": args.steps,
        "distill_train_steps_per_s": round(_steps_per_s(work / "distill_run", args.warmup), 3),
        "finetune_steps_per_s": round(_steps_per_s(work / "finetune_run", args.warmup), 3),
        "finetune_rounds": 2,
        "wall_s": round(time.time() - t0, 1),
    }
    print(json.dumps(result), flush=True)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
