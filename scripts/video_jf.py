"""J&F of the trained tiny fixtures (tests/data/trained) on synthetic videos: the test's 12
(seed 77, items 0..11) and 24 others (items 12..35), both strategies or the ones named.

    python scripts/video_jf.py [points] [mask] [bf16]

``bf16``: the mask decoder in bfloat16 (``VideoOptions.decoder_precision``; default fp32).

Prints one line per model, strategy and set of videos (J&F, J, F, J recall) and writes them to
video_jf.json in the current folder.
"""
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import conftest  # noqa: E402  (the fixtures' loader)
from test_video_trained import track  # noqa: E402  (tracks a video from its first-frame masks)

from repvit_sam.evaluation.video_metrics import davis_summary, score_sequence  # noqa: E402
from repvit_sam.synthetic import make_video, scene_rng  # noqa: E402
from repvit_sam.utils import write_json_atomic  # noqa: E402
from repvit_sam.video import VideoOptions  # noqa: E402

precision = "bf16" if "bf16" in sys.argv[1:] else "fp32"
strategies = [a for a in sys.argv[1:] if a != "bf16"] or ["points", "mask"]
torch.set_num_threads(2)
videos = {i: make_video(scene_rng(77, i, "video"), 240, 320, num_frames=24, reenter=(i % 2 == 0)) for i in range(36)}

out = {}
for name in ("teacher", "student"):
    model = conftest.trained_model(f"{name}.pt")
    for strategy in strategies:
        for part, items in (("test 12", range(12)), ("other 24", range(12, 36))):
            start = time.time()
            objects = []
            for i in items:
                objects += score_sequence(f"s{i}", list(videos[i].id_maps), list(track(model, videos[i], VideoOptions(strategy=strategy, decoder_precision=precision))))
            s = davis_summary(objects)
            key = f"{name} {strategy} {part}" + (" bf16" if precision == "bf16" else "")
            out[key] = {k: round(float(s[k]), 4) for k in ("J&F-Mean", "J-Mean", "F-Mean", "J-Recall")}
            print(key, out[key], f"{time.time() - start:.0f} s", flush=True)
write_json_atomic(Path("video_jf.json"), out)
