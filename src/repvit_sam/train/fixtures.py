"""Make the trained tiny fixtures of ``tests/data/trained`` (deterministic; CPU, one thread).

    python -m repvit_sam.train.fixtures -o tests/data/trained --work /tmp/fixtures

1. synthetic images (``repvit_sam.synthetic``): a training set (seed 0) and a held-out set
   (seed 1), 256 x 256;
2. ``finetune`` a tiny teacher from random initialisation on the training set (all parts
   trainable), validated on the held-out set, in the stages of ``TEACHER_STAGES`` (the later
   ones on sets of new synthetic images; the last grown to twice the depth first, see
   :mod:`.grow`);
3. ``distill embed`` the teacher's embeddings of the training images, ``distill train`` a
   ``tiny_repvit`` student on them (phase 1, MSE), ``distill export`` (teacher's decoder);
4. ``distill train --phase prompt`` (phase 2, prompt-in-the-loop) from that student, export;
5. validate all three on the held-out set with the coco-prompt protocol and write
   ``teacher.pt``, ``student_mse.pt``, ``student.pt`` (official-format state_dicts) and
   ``models.json`` (each file's variant, SHA-256 and validation figures, and the commands).

Every step runs in this process through the command line's own ``main``; a step whose output
exists is not redone, so a killed run continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

FIRST_TEACHER, STUDENT = "tiny_vit_b_wide", "tiny_repvit_wide"
TRAIN_COUNT, VAL_COUNT, SIZE = 2000, 50, (256, 256)
VAL_CLICKS = 4

FINETUNE = ["--trainable", "all", "--mask-loss", "bce-dice", "--steps", "3000", "--batch-size", "8", "--lr", "2e-3", "--weight-decay", "0.01",
            "--rounds", "2", "--max-instances", "6", "--val-every", "5000", "--checkpoint-every", "100", "--log-every", "20",
            "--val-clicks", str(VAL_CLICKS), "--seed", "0", "--no-bf16"]
# The teacher trains in stages, each from the weights of the one before. Each entry is (the
# options that override FINETUNE's, the stage's training images, its variant): None is the
# fixtures' training set (TRAIN_COUNT images, seed 0); (count, seed) is a set of its own, made the
# same way. A variant of None is the stage before's (FIRST_TEACHER for stage 1); a stage whose
# variant differs starts from the stage before's weights grown into it (repvit_sam.train.grow:
# same outputs, twice the blocks).
#   stage 1: FINETUNE from random weights (it ran on a CPU, 93 min on one thread);
#   stages 2, 3: batch 32 with a fresh warm-up and cosine decay (they ran on an H200: 3.4 and 4.6 min);
#   stage 4: 16000 new images (seed 2), 3200 steps at batch 32; after 6100 steps on the same 2000
#            images, new images were what raised the held-out box mIoU (it ran on a 2-core CPU
#            through `repvit-sam finetune` with two threads and --workers 1).
#   stage 5: stage 4's teacher grown to 8 blocks (tiny_vit_b_deep), 2000 steps at batch 32 on
#            8000 new images (seed 3): stage 4's images were fitted as well as held-out ones, so
#            the 4-block model, not the data, was the limit (2-core CPU, as stage 4).
TEACHER_STAGES: List[Tuple[List[str], Optional[Tuple[int, int]], Optional[str]]] = [
    ([], None, None),
    (["--steps", "1300", "--batch-size", "32", "--lr", "1e-3"], None, None),
    (["--steps", "1800", "--batch-size", "32", "--lr", "5e-4"], None, None),
    (["--steps", "3200", "--batch-size", "32", "--lr", "3e-4", "--val-every", "800"], (16000, 2), None),
    (["--steps", "2000", "--batch-size", "32", "--lr", "3e-4", "--val-every", "500"], (8000, 3), "tiny_vit_b_deep"),
]
PHASE1 = ["--recipe", "tiny", "--steps", "1500", "--batch-size", "8", "--lr", "3e-3", "--val-images", "20",
          "--checkpoint-every", "100", "--val-every", "5000", "--log-every", "25", "--seed", "0", "--no-bf16"]
PHASE2 = ["--phase", "prompt", "--recipe", "prompt", "--steps", "200", "--batch-size", "8", "--lr", "3e-4", "--val-images", "20",
          "--max-instances", "6", "--checkpoint-every", "100", "--val-every", "5000", "--log-every", "20", "--seed", "0", "--no-bf16"]


def _teacher_stages(first: List[str], count: int, smoke: bool) -> List[List[str]]:
    """The finetune options of each of the first ``count`` teacher stages (TEACHER_STAGES over
    ``first``, the first stage's options)."""
    stages = []
    for k, (overrides, _, _) in enumerate(TEACHER_STAGES[:count]):
        opts = list(first) if k == 0 else list(FINETUNE)
        for name, value in zip(overrides[::2], overrides[1::2]):
            opts[opts.index(name) + 1] = value
        if smoke:  # a few steps, at a batch the smoke run's 24 images hold
            opts[opts.index("--steps") + 1] = "3"
            opts[opts.index("--batch-size") + 1] = first[first.index("--batch-size") + 1]
        stages.append(opts)
    return stages


def _stage_data(work: Path, k: int, smoke: bool, train_count: int = TRAIN_COUNT) -> Tuple[Path, int, int]:
    """Teacher stage ``k``'s training images: (folder, count, seed). The fixtures' own set is
    WORK/train (``train_count`` images); a stage's own set is WORK/train_seedS (``train_count``
    images in a smoke run)."""
    data = TEACHER_STAGES[k][1]
    if data is None:
        return work / "train", train_count, 0
    count, seed = data
    return work / f"train_seed{seed}", train_count if smoke else count, seed


def _stage_variant(k: int) -> str:
    """The model variant teacher stage ``k`` (0-based) trains."""
    variant = FIRST_TEACHER
    for _, _, v in TEACHER_STAGES[:k + 1]:
        variant = v or variant
    return variant


def _teacher_run(work: Path, k: int) -> Path:
    """The run folder of teacher stage ``k`` (0-based): WORK/teacher, WORK/teacher_2, ..."""
    return work / ("teacher" if k == 0 else f"teacher_{k + 1}")


def _init_text(k: int) -> str:
    """How models.json names the weights teacher stage ``k`` (0-based, > 0) starts from."""
    if _stage_variant(k - 1) == _stage_variant(k):
        return f"<stage {k}'s model.pt>"
    return (f"<stage {k}'s model.pt grown to {_stage_variant(k)}: python -m repvit_sam.train.grow SRC DST "
            f"--from {_stage_variant(k - 1)} --to {_stage_variant(k)}>")


def _cli(argv: List[Any]) -> None:
    from ..cli import main

    argv = [str(a) for a in argv]
    print("$ repvit-sam " + " ".join(argv), file=sys.stderr, flush=True)
    code = main(argv)
    if code != 0:
        raise SystemExit(f"step failed (exit {code}): repvit-sam {' '.join(argv)}")


def _synth_command(count: int, seed: int) -> str:
    """How models.json names a synthetic set that :func:`_synth` makes."""
    return f"repvit-sam synth images --count {count} --seed {seed} ({'x'.join(map(str, SIZE))})"


def _synth(out: Path, count: int, seed: int) -> None:
    import os

    from ..synthetic import write_images

    manifest = out / "synth.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        if m.get("count") == count and m.get("seed") == seed:
            return
    # the files do not depend on the number of worker processes
    write_images(out, count=count, seed=seed, size=SIZE, quiet=True, workers=min(16, os.cpu_count() or 1))


def validate_file(name: str, checkpoint: Path, val: Path) -> Dict[str, Any]:
    """The coco-prompt figures of a checkpoint on the held-out set (fractions 0..1)."""
    from ..registry import build_sam
    from .data import read_entries
    from .validate import coco_records, prompt_validation

    entries, _ = read_entries(val / "annotations.json", val / "images")
    return prompt_validation(build_sam(name, checkpoint=checkpoint), coco_records(entries, 16), VAL_CLICKS)


def main(argv: List[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(prog="python -m repvit_sam.train.fixtures", description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", type=Path, default=Path("tests/data/trained"), help="where the fixtures go")
    p.add_argument("--work", type=Path, required=True, help="work folder (synthetic data, runs); re-use it to continue")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda; the committed fixtures say which made them")
    p.add_argument("--teacher-only", action="store_true", help="stop after fine-tuning the teacher (its last stage's RUN/model.pt)")
    p.add_argument("--teacher-stages", type=int, default=len(TEACHER_STAGES), metavar="K",
                   help=f"train only the first K of the teacher's {len(TEACHER_STAGES)} stages (see TEACHER_STAGES)")
    p.add_argument("--smoke", action="store_true", help="a few steps of each stage on a few images (checks the pipeline, not the models)")
    p.add_argument("--teacher-steps", type=int, default=None, metavar="N",
                   help=f"fine-tuning steps of the teacher's first stage (default {FINETUNE[FINETUNE.index('--steps') + 1]})")
    p.add_argument("--train-count", type=int, default=None, metavar="N",
                   help=f"synthetic training images (default {TRAIN_COUNT}; more where a GPU trains longer)")
    p.add_argument("--teacher-batch-size", type=int, default=None, metavar="B",
                   help=f"batch size of the teacher's first stage (default {FINETUNE[FINETUNE.index('--batch-size') + 1]})")
    p.add_argument("--teacher-lr", type=float, default=None, metavar="LR",
                   help=f"peak learning rate of the teacher's first stage (default {FINETUNE[FINETUNE.index('--lr') + 1]})")
    p.add_argument("--teacher-init", type=Path, default=None, metavar="PATH",
                   help="start the teacher's first stage from these weights instead of random ones; models.json records "
                        "the file's SHA-256")
    args = p.parse_args(argv)
    finetune, phase1, phase2 = list(FINETUNE), list(PHASE1), list(PHASE2)
    train_count, val_count = TRAIN_COUNT, VAL_COUNT
    if args.smoke:
        train_count, val_count = 24, 4
        for opts in (finetune, phase1, phase2):
            opts[opts.index("--steps") + 1] = "3"
        phase1[phase1.index("--val-images") + 1] = "2"
        phase2[phase2.index("--val-images") + 1] = "2"
    if not 1 <= args.teacher_stages <= len(TEACHER_STAGES):
        p.error(f"--teacher-stages must be 1..{len(TEACHER_STAGES)}, got {args.teacher_stages}")
    if args.train_count is not None:
        if args.train_count < 1:
            p.error(f"--train-count must be at least 1, got {args.train_count}")
        train_count = args.train_count
    if args.teacher_steps is not None:
        finetune[finetune.index("--steps") + 1] = str(args.teacher_steps)
    if args.teacher_batch_size is not None:
        finetune[finetune.index("--batch-size") + 1] = str(args.teacher_batch_size)
    if args.teacher_lr is not None:
        finetune[finetune.index("--lr") + 1] = str(args.teacher_lr)
    if args.teacher_init is not None:
        if not args.teacher_init.is_file():
            p.error(f"--teacher-init file not found: {args.teacher_init}")
        finetune += ["--checkpoint", str(args.teacher_init)]
    dev = ["--device", args.device, "--workers", "0" if args.device == "cpu" else "4"]
    torch.set_num_threads(1)  # deterministic, and fastest on a shared 2-core machine
    work, out = args.work, args.output
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    train, val = work / "train", work / "val"
    _synth(train, train_count, 0)
    _synth(val, val_count, 1)

    stage_options = _teacher_stages(finetune, args.teacher_stages, args.smoke)
    for k, options in enumerate(stage_options):
        teacher_run, variant = _teacher_run(work, k), _stage_variant(k)
        if not (teacher_run / "model.pt").is_file():
            data, count, seed = _stage_data(work, k, args.smoke, train_count)
            _synth(data, count, seed)
            resume = ["--resume"] if (teacher_run / "checkpoints" / "last.pt").is_file() else []
            init: List[Any] = []
            if k > 0 and not resume:
                before = _teacher_run(work, k - 1) / "model.pt"
                if _stage_variant(k - 1) != variant:
                    from .grow import grow_checkpoint

                    grown = work / f"{teacher_run.name}_grown.pt"
                    grow_checkpoint(before, grown, _stage_variant(k - 1), variant)
                    before = grown
                init = ["--checkpoint", before]
            _cli(["finetune", "--data", data / "annotations.json", "--images", data / "images", "--model", variant,
                  "-o", teacher_run, "--val-data", val / "annotations.json", "--val-images", val / "images", *options, *init,
                  *dev, *resume])
    teacher, teacher_variant = teacher_run / "model.pt", _stage_variant(len(stage_options) - 1)
    if args.teacher_only:
        return 0

    emb = work / "embeddings"
    _cli(["distill", "embed", "--teacher", teacher_variant, "--teacher-checkpoint", teacher, "--images", train / "images",
          "--out", emb, "--shard-size", "400", *dev])
    exported: Dict[str, Path] = {}
    for phase, extra in (("mse", phase1), ("prompt", phase2)):
        run = work / f"student_{phase}"
        target = work / f"student_{phase}.pt"
        if not target.is_file():
            resume = ["--resume"] if (run / "checkpoints" / "last.pt").is_file() else []
            init = ["--student-init", exported["mse"]] if phase == "prompt" and not resume else []
            ann = ["--annotations", train / "annotations.json"] if phase == "prompt" else []
            _cli(["distill", "train", "--embeddings", emb, "--images", train / "images", "--student", STUDENT, "--out", run,
                  "--teacher-checkpoint", teacher, "--no-verify", *extra, *init, *ann, *dev, *resume])
            _cli(["distill", "export", "--run", run, "--teacher-checkpoint", teacher, "-o", target])
        exported[phase] = target

    from ..utils import file_sha256

    out.mkdir(parents=True, exist_ok=True)
    files = {"teacher.pt": (teacher_variant, teacher), "student_mse.pt": (STUDENT, exported["mse"]), "student.pt": (STUDENT, exported["prompt"])}
    record: Dict[str, Any] = {
        "made_by": f"python -m repvit_sam.train.fixtures -o tests/data/trained --work WORK --device {args.device}",
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu (torch.set_num_threads(1))",
        "note": "each model's trained_on (and each teacher stage's) says where its training ran; the validation figures were "
                "computed where this file was written (device)",
        "torch": torch.__version__,
        "data": {"train": _synth_command(train_count, 0),
                 "held_out": _synth_command(val_count, 1)},
        "protocol": "coco-prompt on the held-out set: box = the mask's box, single output; 1 point = the pixel farthest from the "
                    f"boundary, best of 3 by predicted IoU; then {VAL_CLICKS} correction clicks; mIoU as a fraction; area ranges "
                    "(COCO, mask pixels): small < 32^2, medium 32^2..96^2, large >= 96^2",
        "teacher_init": None if args.teacher_init is None else {"file": args.teacher_init.name, "sha256": file_sha256(args.teacher_init)},
        "commands": {"teacher": [["finetune", *o] + (["--checkpoint", _init_text(k)] if k > 0 else [])
                                 for k, o in enumerate(stage_options)], "student_mse": ["distill", "train", *phase1],
                     "student": ["distill", "train", *phase2]},
        "models": {},
    }
    record["teacher_stages"] = []
    for k in range(len(stage_options)):
        rj = _teacher_run(work, k) / "run.json"
        info = json.loads(rj.read_text()) if rj.is_file() else {}
        _, count, seed = _stage_data(work, k, args.smoke, train_count)
        record["teacher_stages"].append({"stage": k + 1, "variant": _stage_variant(k), "trained_on": info.get("device"),
                                         "steps": info.get("total_steps"),
                                         "batch_size": (info.get("recipe") or {}).get("batch_size"),
                                         "data": _synth_command(count, seed)})
    for fname, (variant, src) in files.items():
        shutil.copyfile(src, out / fname)
        run_json = {"teacher.pt": teacher_run, "student_mse.pt": work / "student_mse", "student.pt": work / "student_prompt"}[fname] / "run.json"
        made_on = json.loads(run_json.read_text()).get("device") if run_json.is_file() else None
        record["models"][fname] = {"variant": variant, "sha256": file_sha256(out / fname), "bytes": (out / fname).stat().st_size,
                                   "trained_on": made_on, "validation": validate_file(variant, out / fname, val)}
    record["seconds"] = round(time.time() - t0)
    from ..utils import write_json_atomic

    write_json_atomic(out / "models.json", record)
    for fname, m in record["models"].items():
        v = m["validation"]
        print(f"{fname:15s} {m['variant']:12s} box {v['miou_box']:.3f}  1 point {v['miou_point']:.3f}  "
              f"+{VAL_CLICKS} clicks {v[f'miou_point_{VAL_CLICKS + 1}_clicks']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
