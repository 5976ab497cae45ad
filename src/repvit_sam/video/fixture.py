"""Make the trained tiny tracker of ``tests/data/video_tracker`` (deterministic; CPU, one thread).

    python -m repvit_sam.video.fixture -o tests/data/video_tracker [--steps 3000]

A stop-gap until the training issue's tiny models (``tests/data/trained``) segment well from
the prompts a tracker gives: ``tiny_repvit`` trained from random initialisation on frames of
synthetic videos (``repvit_sam.synthetic.make_video``, 320 x 240, seeds disjoint from every
evaluation set) with exactly those prompts, per object of a frame, all parts trainable:

* pass 1 — SAM-PT's first pass: up to 8 positive points of the object, each kept
  with probability 0.8, jittered by up to 2 px, read from the object's mask one or two frames
  earlier half of the time (the tracker's points lag the motion);
* pass 2 — the same points plus negatives (one point of the inverted mask, the other
  objects' points) and pass 1's logits as mask input, with a jittered box half of the time
  (SAM-PT's second pass and refinement; mask propagation's box, point and logits);
* pass 3 — one point, three candidates, the best one trained (re-detection, click prompts).

Loss per pass: ``--mask-loss`` (default ``sam``: SAM's 20 x focal + dice; ``bce-dice``: BCE x 5
+ Dice x 5, which leaves the all-background start sooner but, after 2000 steps here, tracks no
better: held-out J&F 0.364 points / 0.225 mask against 0.365 / 0.256), on the low-res logits
against each mask's covered fraction of the low-res cells, and the MSE of the predicted IoU (on
the candidate trained). Positive points are mask pixels drawn at random (cheaper than K-Medoids, as spread). AdamW (lr 2e-3, weight decay 0.01), 100 warm-up
steps then cosine decay; batch 8 frames. Output: ``tiny_repvit_video.pt`` (an official-layout
state_dict) and ``model.json`` (how it was made, SHA-256, and held-out J&F of both
strategies on synthetic sequences of seed 100).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
from torch.nn import functional as F

VARIANT = "tiny_repvit"
TRAIN_SEED, VAL_SEED = 1000, 100
SIZE = (240, 320)  # (H, W) of the synthetic frames


def train_videos(count: int) -> List[Any]:
    from ..synthetic import make_video, scene_rng

    return [make_video(scene_rng(TRAIN_SEED, i, "video"), *SIZE) for i in range(count)]


class Sampler:
    """Prompts for one object from its masks, as the tracker makes them (mask pixels drawn at
    random stand in for K-Medoids points: the same spread, far cheaper)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def points(self, mask: np.ndarray, k: int, keep: float = 0.8) -> np.ndarray:
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            return np.zeros((0, 2))
        idx = self.rng.choice(len(xs), size=min(k, len(xs)), replace=False)
        pts = np.stack([xs[idx], ys[idx]], 1).astype(np.float64)
        chosen = self.rng.random(len(pts)) < keep
        chosen[self.rng.integers(len(pts))] = True
        pts = pts[chosen] + self.rng.uniform(-2, 2, (int(chosen.sum()), 2))
        h, w = mask.shape
        return np.clip(pts, 0, [w - 1, h - 1])

    def box(self, mask: np.ndarray) -> np.ndarray:
        from .points import mask_box

        b = mask_box(mask)
        size = np.array([b[2] - b[0] + 1, b[3] - b[1] + 1] * 2)
        b = b + self.rng.normal(0, 0.05, 4) * size
        h, w = mask.shape
        return np.clip(b, 0, [w - 1, h - 1, w - 1, h - 1])


def make_batch(videos, batch: int, sampler: Sampler, rng: np.random.Generator):
    """``batch`` frames and, per object of each: (frame index, gt mask, positives, negatives,
    box, one point)."""
    frames, objects = [], []
    while len(frames) < batch:
        v = videos[int(rng.integers(len(videos)))]
        t = int(rng.integers(len(v.frames)))
        ids = [k for k in range(1, v.num_objects + 1) if (v.id_maps[t] == k).sum() >= 20]
        if not ids:
            continue
        src_t = max(0, t - int(rng.choice([0, 0, 1, 2])))
        pos, rec = [], []
        for k in ids:
            g = v.id_maps[t] == k
            prev = v.id_maps[src_t] == k
            ref = prev if prev.sum() >= 20 else g
            pos.append(sampler.points(ref, 8))
            rec.append((g, sampler.box(ref), sampler.points(g, 1, keep=1.0)))
        for i, k in enumerate(ids):
            bg = sampler.points(v.id_maps[t] != k, 1, keep=1.0)
            negs = np.concatenate([bg, *[p for j, p in enumerate(pos) if j != i]])
            objects.append((len(frames), rec[i][0], pos[i], negs, rec[i][1], rec[i][2]))
        frames.append(v.frames[t])
    return frames, objects


def _pad(points: List[np.ndarray], labels: List[np.ndarray]) -> Tuple[torch.Tensor, torch.Tensor]:
    n = max(len(p) for p in points)
    coords = np.zeros((len(points), n, 2), np.float32)
    labs = -np.ones((len(points), n), np.int64)
    for i, (p, l) in enumerate(zip(points, labels)):
        coords[i, : len(p)] = p
        labs[i, : len(p)] = l
    return torch.as_tensor(coords), torch.as_tensor(labs, dtype=torch.int)


def step_loss(model, frames, objects, rng, loss_fn=None) -> torch.Tensor:
    """The three passes for every object of the batch (one decoder call per pass); the loss is
    taken on the low-res logits against each mask's covered fraction of the low-res cells.
    ``loss_fn``: a mask loss of ``train.objectives.MASK_LOSSES`` (default SAM's)."""
    from ..inference.transforms import ResizeLongestSide

    size = model.image_encoder.img_size
    tf = ResizeLongestSide(size)
    x = torch.stack([torch.as_tensor(tf.apply_image(f)).permute(2, 0, 1) for f in frames]).float()
    h_in, w_in = x.shape[-2:]
    emb = model.image_encoder(model.preprocess(x))  # (B, C, h, w)
    e = emb[torch.as_tensor([o[0] for o in objects])]  # (K, C, h, w): each object's frame
    pe = model.prompt_encoder.get_dense_pe()
    low_hw = model.prompt_encoder.mask_input_size
    gt = torch.as_tensor(np.stack([o[1] for o in objects]), dtype=torch.float32)[:, None]
    gt = F.interpolate(gt, size=(h_in, w_in), mode="bilinear", align_corners=False)
    gt = F.adaptive_avg_pool2d(F.pad(gt, (0, size - w_in, 0, size - h_in)), low_hw)[:, 0]  # (K, h4, w4) in [0, 1]

    def decode(points, labels, boxes, masks, multimask):
        sparse, dense = model.prompt_encoder(points=_pad(points, labels), boxes=boxes, masks=masks)
        return model.mask_decoder(image_embeddings=e, image_pe=pe, sparse_prompt_embeddings=sparse,
                                  dense_prompt_embeddings=dense, multimask_output=multimask)

    if loss_fn is None:
        from ..train.objectives import sam_mask_loss as loss_fn

    def loss(low, iou):
        target = gt[:, None].expand_as(low)
        flat, tflat = low.flatten(0, 1), target.flatten(0, 1)
        mask_l = loss_fn(flat, tflat).view(low.shape[:2])
        best = mask_l.argmin(1)
        rows = torch.arange(len(low))
        with torch.no_grad():
            pred = low[rows, best] > 0
            t = target[rows, best] > 0.5
            true_iou = (pred & t).flatten(1).sum(1) / (pred | t).flatten(1).sum(1).clamp(min=1)
        return mask_l[rows, best].mean() + F.mse_loss(iou[rows, best], true_iou)

    p1 = [tf.apply_coords(o[2], SIZE) for o in objects]
    low1, iou1 = decode(p1, [np.ones(len(p)) for p in p1], None, None, False)
    p2 = [np.concatenate([a, tf.apply_coords(o[3], SIZE)]) for a, o in zip(p1, objects)]
    l2 = [np.concatenate([np.ones(len(a)), np.zeros(len(o[3]))]) for a, o in zip(p1, objects)]
    box = torch.as_tensor(tf.apply_boxes(np.stack([o[4] for o in objects]), SIZE), dtype=torch.float32) if rng.random() < 0.5 else None
    low2, iou2 = decode(p2, l2, box, low1.detach(), False)
    p3 = [tf.apply_coords(o[5], SIZE) for o in objects]
    low3, iou3 = decode(p3, [np.ones(len(p)) for p in p3], None, None, True)
    return (loss(low1, iou1) + loss(low2, iou2) + loss(low3, iou3)) / 3


def evaluate(model, count: int = 4) -> Dict[str, Any]:
    """Held-out J&F (synthetic sequences of seed 100) for both strategies."""
    from ..evaluation.video_metrics import davis_summary, score_sequence
    from ..synthetic import make_video, scene_rng
    from .options import VideoOptions
    from .predictor import VideoPredictor
    from .prompts import Prompts

    videos = [make_video(scene_rng(VAL_SEED, i, "video"), *SIZE) for i in range(count)]
    out = {}
    for strategy in ("points", "mask"):
        objs = []
        for i, v in enumerate(videos):
            prompts = Prompts()
            for k in range(1, v.num_objects + 1):
                prompts.add(0, k, mask=v.id_maps[0] == k)
            pred = [r.label_map(SIZE) for r in VideoPredictor(model, VideoOptions(strategy=strategy)).propagate(list(v.frames), prompts, "forward")]
            objs += score_sequence(f"val{i}", list(v.id_maps), pred)
        out[strategy] = {k: round(float(x), 4) for k, x in davis_summary(objs).items()}
    return out


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m repvit_sam.video.fixture", description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", type=Path, default=Path("tests/data/video_tracker"))
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--videos", type=int, default=48, help="training videos (seed 1000)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mask-loss", choices=("sam", "bce-dice"), default="sam",
                   help="sam (20 x focal + dice, default) or bce-dice (BCE x5 + Dice x5)")
    p.add_argument("--init", type=Path, help="continue from this checkpoint of the variant (default: random initialisation)")
    args = p.parse_args(argv)

    from ..utils import file_sha256
    from ..registry import build_sam
    from ..utils import atomic_write, write_json_atomic

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    videos = train_videos(args.videos)
    model = build_sam(VARIANT, checkpoint=args.init)
    model.train()
    init_record = None
    if args.init is not None:
        prev = args.init.parent / "model.json"
        init_record = json.loads(prev.read_text()) if prev.is_file() else {"file": str(args.init)}
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warm = 100
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, args.steps - warm))))
    sampler = Sampler(rng)
    from ..train.objectives import MASK_LOSSES

    mask_loss = MASK_LOSSES[args.mask_loss]
    running = None
    for step in range(args.steps):
        frames, items = make_batch(videos, args.batch, sampler, rng)
        loss = step_loss(model, frames, items, rng, mask_loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running = float(loss) if running is None else 0.98 * running + 0.02 * float(loss)
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step} loss {running:.4f} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    model.eval()
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{VARIANT}_video.pt"
    with atomic_write(target) as f:
        torch.save(model.state_dict(), f)
    record = {
        "made_by": f"python -m repvit_sam.video.fixture -o {out} --steps {args.steps} --batch {args.batch} --videos {args.videos} "
                   f"--lr {args.lr} --seed {args.seed} --mask-loss {args.mask_loss}" + (f" --init {args.init}" if args.init else ""),
        "continued_from": init_record,
        "variant": VARIANT, "file": target.name, "sha256": file_sha256(target), "bytes": target.stat().st_size,
        "device": "cpu (torch.set_num_threads(1))", "torch": torch.__version__,
        "data": f"synthetic videos (make_video, seed {TRAIN_SEED}, {args.videos} sequences, {SIZE[1]}x{SIZE[0]})",
        "seconds_training": round(time.time() - t0),
        "held_out_jf": evaluate(model),
        "held_out": f"synthetic videos, seed {VAL_SEED}, 4 sequences, tracked forward from first-frame masks, default VideoOptions",
    }
    write_json_atomic(out / "model.json", record)
    print(json.dumps(record["held_out_jf"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
