"""Segment-everything speed: the reference path vs the fast path (fp32, bf16, coarse-to-fine),
measured in one run on one image, with the agreement of each mode's masks with the reference's.

    python -m repvit_sam.bench_everything [--model repvit] [--checkpoint PATH] [--image PATH]
        [--size 1024] [--modes reference fast fast-bf16 coarse-to-fine] [--filters default|none]
        [--json PATH]

Each mode runs in a fresh process (same weights: the checkpoint, or random weights from a fixed
seed), after a small warm-up, so its peak memory (resident set) is its own. Random weights make
almost every mask fail the default filters; ``--filters none`` turns the filters off so that
every mask goes through the full-resolution post-processing (the slow case for both paths).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import resource
import sys
import time
from typing import Any, Dict, List, Optional

MODES = {
    "reference": dict(impl="reference"),
    "fast": dict(impl="fast"),
    "fast-bf16": dict(impl="fast", precision="bf16"),
    "coarse-to-fine": dict(impl="fast", sampling="coarse-to-fine"),
    "coarse-to-fine-bf16": dict(impl="fast", precision="bf16", sampling="coarse-to-fine"),
}
FILTERS = {"default": {}, "none": dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)}


def bench_image(path: Optional[str], size: int):
    """(H, W, 3) uint8 with long side ``size``: the given image, else scikit-image's coffee
    photo when installed, else a synthetic pattern of shapes."""
    import numpy as np
    from PIL import Image

    if path is not None:
        from .io import load_image

        img = Image.fromarray(load_image(path))
    else:
        try:
            from skimage import data

            img = Image.fromarray(data.coffee())
        except ImportError:
            yy, xx = np.mgrid[0:600, 0:800]
            arr = np.stack([(xx * 255 // 800), (yy * 255 // 600), ((xx + yy) % 256)], -1).astype(np.uint8)
            arr[((xx - 300) ** 2 + (yy - 300) ** 2) < 120**2] = (220, 40, 40)
            arr[100:250, 500:700] = (30, 200, 60)
            img = Image.fromarray(arr)
    scale = size / max(img.size)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)
    return np.asarray(img.convert("RGB"))


def _measure(mode: str, cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Build the model, warm up, then time one ``generate`` of mode ``mode``."""
    import numpy as np
    import torch

    from .hub import load_pretrained
    from .inference.amg import SamAutomaticMaskGenerator
    from .modeling.fuse import fuse_model
    from .registry import build_from_config, build_sam

    torch.manual_seed(0)
    if not isinstance(cfg["model"], str):  # a SamConfig (tests: tiny models)
        model = build_from_config(cfg["model"])
    elif cfg["checkpoint"] or cfg.get("pretrained"):
        model = load_pretrained(cfg["model"], checkpoint=cfg["checkpoint"])
    else:
        model = build_sam(cfg["model"])
    model = fuse_model(model.eval(), inplace=True)
    image = bench_image(cfg["image"], cfg["size"])
    kwargs = dict(points_per_side=cfg["points_per_side"], output_mode="coco_rle", **FILTERS[cfg["filters"]], **MODES[mode])
    SamAutomaticMaskGenerator(model, **{**kwargs, "points_per_side": 2}).generate(image[:64, :64])  # warm-up
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gen = SamAutomaticMaskGenerator(model, **kwargs)
    t0 = time.perf_counter()
    with torch.inference_mode():
        records = gen.generate(image)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"mode": mode, "seconds": seconds, "records": records, "peak_rss_mb": peak / 1024,
            "rss_growth_mb": (peak - base_rss) / 1024, "image_hw": list(np.asarray(image).shape[:2])}


def _child(mode: str, cfg: Dict[str, Any], queue: "mp.Queue") -> None:
    try:
        queue.put(_measure(mode, cfg))
    except Exception as e:  # report, don't hang the parent
        queue.put({"mode": mode, "error": f"{type(e).__name__}: {e}"})


def _isolated(mode: str, cfg: Dict[str, Any]) -> Dict[str, Any]:
    """``_measure`` in a fresh process, so that its peak memory is its own."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(mode, cfg, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def run(modes: List[str], cfg: Dict[str, Any], progress: bool = True, isolate: bool = True) -> List[Dict[str, Any]]:
    """One row per mode (the reference first when asked for). ``isolate``: each mode in its own
    process (peak memory per mode); else in this process (tests)."""
    from tqdm import tqdm

    from .inference.agreement import compare_records

    rows: List[Dict[str, Any]] = []
    ref_records = None
    ref_seconds = None
    order = ["reference"] + [m for m in modes if m != "reference"] if "reference" in modes else list(modes)
    for mode in tqdm(order, desc="segment everything", file=sys.stderr, disable=not progress):
        if isolate:
            out = _isolated(mode, cfg)
        else:
            try:
                out = _measure(mode, cfg)
            except Exception as e:
                out = {"mode": mode, "error": f"{type(e).__name__}: {e}"}
        if "error" in out:
            rows.append({"mode": mode, "error": out["error"]})
            continue
        records = out.pop("records")
        row: Dict[str, Any] = {**out, "n_masks": len(records)}
        if mode == "reference":
            ref_records, ref_seconds = records, out["seconds"]
        if ref_records is not None and ref_seconds is not None:
            row["speedup"] = ref_seconds / out["seconds"]
            agree = compare_records(ref_records, records, min_iou=0.5)
            row.update({f"agree_{k}": v for k, v in agree.items() if k not in ("n_reference", "n_other")})
        rows.append(row)
    return rows


def markdown(rows: List[Dict[str, Any]]) -> str:
    lines = [
        "| mode | seconds | speed-up vs reference | masks | matched (IoU>=0.5) | IoU>=0.99 | min IoU | max score diff | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['mode']} | error: {r['error']} |||||||")
            continue
        sp = f"{r['speedup']:.2f}x" if "speedup" in r else "-"
        matched = f"{r.get('agree_matched', '-')}"
        ge99 = f"{r.get('agree_matched_iou_ge_0_99', '-')}"
        miniou = f"{r['agree_min_iou']:.3f}" if "agree_min_iou" in r else "-"
        diff = max(r.get("agree_max_predicted_iou_diff", 0.0), r.get("agree_max_stability_diff", 0.0))
        lines.append(
            f"| {r['mode']} | {r['seconds']:.2f} | {sp} | {r['n_masks']} | {matched} | {ge99} | {miniou} | {diff:.1e} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: "Optional[List[str]] | argparse.Namespace" = None) -> int:
    """``python -m repvit_sam.bench_everything ARGS`` is ``repvit-sam bench --task everything ARGS``
    (bench's one parser). Called by bench with its parsed Namespace: first of --models, --size,
    --image, --points-per-side, --modes, --filters, --pretrained; with --json the rows are added
    under "everything" of the report bench wrote."""
    import json
    import sys

    import torch

    from .utils import write_json_atomic

    if not isinstance(argv, argparse.Namespace):
        from .cli import main as cli_main

        return cli_main(["bench", "--task", "everything", *(sys.argv[1:] if argv is None else argv)])
    a = argparse.Namespace(
        model=argv.models[0], checkpoint=None, pretrained=argv.pretrained, image=argv.image, size=argv.size,
        points_per_side=argv.points_per_side, modes=argv.modes, filters=argv.filters, json=argv.json,
    )
    cfg = {k: getattr(a, k) for k in ("model", "checkpoint", "pretrained", "image", "size", "points_per_side", "filters")}
    rows = run(a.modes, cfg)
    machine = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    hw = next((r["image_hw"] for r in rows if "image_hw" in r), None)
    weights = "official weights" if (cfg["checkpoint"] or cfg["pretrained"]) else "random weights"
    print(f"segment everything: {cfg['model']} ({weights}), image {hw}, "
          f"{cfg['points_per_side']}x{cfg['points_per_side']} points, filters {cfg['filters']}; {machine}")
    print(markdown(rows))
    if a.json:
        from pathlib import Path

        path = Path(a.json)
        data = {"machine": machine, "settings": cfg, "results": rows}
        base = json.loads(path.read_text()) if path.exists() and getattr(argv, "bench_report", None) else {}
        data = {**base, "everything": {"settings": cfg, "results": rows}}
        write_json_atomic(path, data)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
