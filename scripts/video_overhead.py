"""What SAM-PT's per-frame decoder work costs against the image encoder, with every object
tracked (one run, this CPU): the fastest CPU encoder (OpenVINO fp32, 1024 px) against
FastDecoder's two passes for 5 objects (pass 1: 8 positive points each; pass 2: the same 8
plus 1 negative and the other 4 objects' 32 points as negatives, and pass 1's logits as mask
input), and the final upsampling of 5 masks to 854 x 480; and the mask strategy's one pass
(each object's previous mask as logits, its box and 1 point). Mask prompts go in as
``mask_input``, as the video predictor passes them. RepViT-SAM, random weights; the cost of
these passes does not depend on the weights, only on how many objects are active.

    python scripts/video_overhead.py [THREADS]
"""
import sys
import time

import torch

from repvit_sam.backends import prepare_encoder
from repvit_sam.registry import build_sam
from repvit_sam.inference.fast_decoder import FastDecoder

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.set_num_threads(threads)
torch.manual_seed(0)
model = build_sam("repvit").eval()
encoder = prepare_encoder(model.image_encoder, "openvino")


def med(fn, runs=5):
    fn()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return 1000 * sorted(ts)[runs // 2]


with torch.no_grad():
    x = torch.randn(1, 3, 1024, 1024)
    enc_ms = med(lambda: encoder(x), 3)
    dec = FastDecoder(model)
    dec.set_image(encoder(x))
    pe, g = model.prompt_encoder, torch.Generator().manual_seed(0)
    sparse1, _ = pe((torch.rand(5, 8, 2, generator=g) * 1024, torch.ones(5, 8, dtype=torch.int)), None, None)
    low = torch.randn(5, 1, 256, 256, generator=g)
    labels2 = (torch.arange(41) < 8).int().expand(5, 41)
    sparse2, _ = pe((torch.rand(5, 41, 2, generator=g) * 1024, labels2), None, low)
    boxes = torch.sort(torch.rand(5, 2, 2, generator=g) * 1024, dim=1).values.flatten(1)
    sparse_m, _ = pe((torch.rand(5, 1, 2, generator=g) * 1024, torch.ones(5, 1, dtype=torch.int)), boxes, low)
    pass1 = med(lambda: dec(sparse1, None, False))
    pass2 = med(lambda: dec(sparse2, None, False, mask_input=low))
    mask_pass = med(lambda: dec(sparse_m, None, False, mask_input=low))
    up = med(lambda: (model.postprocess_masks(low, (576, 1024), (480, 854)) > 0).numpy())
print(f"{threads} thread(s): encoder {enc_ms:.0f} ms | points: pass 1 (5 x 8 points) {pass1:.0f} ms, pass 2 (5 x 41 points + mask) "
      f"{pass2:.0f} ms | mask strategy: 5 x (box + 1 point + mask) {mask_pass:.0f} ms | upsampling {up:.0f} ms | "
      f"points (pass 1 + pass 2 + upsampling) / encoder = {(pass1 + pass2 + up) / enc_ms:.3f} | "
      f"mask (pass + upsampling) / encoder = {(mask_pass + up) / enc_ms:.3f}")
