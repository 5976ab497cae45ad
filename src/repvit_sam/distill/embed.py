"""``repvit-sam distill embed``: teacher image embeddings for an image set, in fp16 shards.

Shard ``i`` holds images ``[i*S, (i+1)*S)`` of the sorted image list; under torchrun rank ``r``
computes the unfinished shards with ``i % WORLD_SIZE == r`` (disjoint parts, no communication),
and whichever rank finishes last writes ``index.json``. A re-run skips finished shards.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List

import numpy as np
import torch
from tqdm.auto import tqdm

from . import shards
from .common import launch_from_env, load_teacher, log, model_config
from .data import ImageDataset, list_images


def run(args: argparse.Namespace) -> int:
    launch = launch_from_env(args.device)
    images = list_images(args.images)
    keys = list(images)
    if args.limit:
        keys = keys[: args.limit]
    ckpt = args.teacher_checkpoint
    if ckpt is None and not model_config(args.teacher).tiny:  # the official file (cached or fetched, under a lock)
        from ..hub import resolve_checkpoint

        ckpt = resolve_checkpoint(args.teacher, verify_keys=False, progress=launch.is_main)
    teacher, cfg = load_teacher(args.teacher, ckpt, launch.device)
    e = cfg.decoder.image_embedding_size
    plan = shards.make_plan(
        keys,
        args.shard_size,
        {
            "teacher": args.teacher,
            "teacher_checkpoint": str(Path(ckpt).resolve()) if ckpt else None,  # train's mIoU, export
            "img_size": cfg.img_size,
            "embed_shape": [cfg.decoder.embed_dim, e, e],
            "dtype": "float16",
        },
    )
    out: Path = args.output
    shards.open_plan(out, plan)
    from ..parallel import Share, rank_share

    mine = rank_share(range(plan["num_shards"]), Share(launch.rank, launch.world_size))
    todo = [i for i in mine if not shards.is_finished(out, plan, i)]
    n_todo = sum(len(shards.shard_keys(plan, i)) for i in todo)
    log.info(
        "%d images in %d shards; this rank: %d shards, %d already finished, %d images to embed",
        plan["num_images"], plan["num_shards"], len(mine), len(mine) - len(todo), n_todo,
    )
    bar = tqdm(total=n_todo, desc=f"embed ({args.teacher})", unit="img", disable=not launch.is_main or n_todo == 0)
    for i in todo:
        skeys = shards.shard_keys(plan, i)
        loader = torch.utils.data.DataLoader(
            ImageDataset([images[k] for k in skeys], cfg),
            batch_size=args.batch_size,
            num_workers=args.workers,
            pin_memory=launch.device.type == "cuda",
        )
        chunks: List[np.ndarray] = []
        with torch.inference_mode():
            for _, x in loader:
                emb = teacher.image_encoder(x.to(launch.device, non_blocking=True))
                chunks.append(emb.to(torch.float16).cpu().numpy())
                bar.update(len(x))
        shards.write_shard(out, i, skeys, np.concatenate(chunks))
    bar.close()
    index = shards.finalize_index(out, plan)
    if index is not None:
        size = sum(s["bytes"] for s in index["shards"])
        print(f"embeddings of {index['num_images']} images ({size / 2**20:.1f} MiB in {len(index['shards'])} shards) in {out}")
    else:
        print(f"rank {launch.rank}: my shards are finished; the last rank to finish writes {out / shards.INDEX}")
    return 0
