"""The arithmetic of one video frame with 5 tracked objects, against the image encoder's: a
floor for the speed target of ``repvit-sam bench --task video`` (work beyond the encoder
<= 15% of the encoder's time), independent of the machine.

Counts matrix-product and convolution FLOPs with ``torch.utils.flop_counter`` (in-place
products such as ``baddbmm_`` are not counted, so the decoder figures are lower bounds) for
RepViT-SAM at 1024 px:
- the image encoder;
- ``FastDecoder.set_image`` (once per frame);
- the decoder passes the video predictor makes for 5 objects, with its prompt shapes:
  SAM-PT pass 1 (8 positive points each), pass 2 (the 8, 1 negative and the other 4 objects'
  32 points as negatives, pass 1's logits as mask input), one refinement pass (pass 2's points
  plus the mask's box and logits; SAM-PT makes 12), and the mask strategy's one pass (box,
  1 point and the previous logits).
The cost of these passes depends on the prompt shapes only, not on the weights (random here).

    python scripts/video_flops.py
"""
import torch
from torch.utils.flop_counter import FlopCounterMode

from repvit_sam.inference.fast_decoder import FastDecoder
from repvit_sam.measure import count_gflop
from repvit_sam.registry import build_sam

OBJECTS, POSITIVE, REFINE = 5, 8, 12


def gflop(fn) -> float:
    """GFLOP of a call (``measure.count_gflop`` counts a module's forward; these are decoder calls)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def main() -> None:
    torch.manual_seed(0)
    model = build_sam("repvit").eval()
    pe, g = model.prompt_encoder, torch.Generator().manual_seed(0)
    encoder = count_gflop(model.image_encoder, (1, 3, 1024, 1024))
    with torch.no_grad():
        dec = FastDecoder(model)
        emb = torch.randn(1, 256, *model.prompt_encoder.image_embedding_size, generator=g)  # the count does not depend on its values
        set_image = gflop(lambda: dec.set_image(emb))

        def sparse(n_points: int, n_positive: int, box: bool):
            coords = torch.rand(OBJECTS, n_points, 2, generator=g) * 1024
            labels = (torch.arange(n_points) < n_positive).int().expand(OBJECTS, n_points)
            boxes = torch.sort(torch.rand(OBJECTS, 2, 2, generator=g) * 1024, dim=1).values.flatten(1) if box else None
            return pe((coords, labels), boxes, None)[0]

        low = torch.randn(OBJECTS, 1, 256, 256, generator=g)
        n2 = POSITIVE + 1 + (OBJECTS - 1) * POSITIVE
        s1, s2, sr, sm = sparse(POSITIVE, POSITIVE, False), sparse(n2, POSITIVE, False), sparse(n2, POSITIVE, True), sparse(1, 1, True)
        pass1 = gflop(lambda: dec(s1, None, False))
        pass2 = gflop(lambda: dec(s2, None, False, mask_input=low))
        refine = gflop(lambda: dec(sr, None, False, mask_input=low))
        mask = gflop(lambda: dec(sm, None, False, mask_input=low))
    rows = [
        (f"SAM-PT, {REFINE} refinement passes (the protocol)", set_image + pass1 + pass2 + REFINE * refine),
        ("SAM-PT, no refinement passes", set_image + pass1 + pass2),
        ("mask strategy, no refinement passes", set_image + mask),
    ]
    print(f"RepViT-SAM 1024 px, {OBJECTS} objects. GFLOP: encoder {encoder:.1f}; per frame: set_image {set_image:.2f}, "
          f"SAM-PT pass 1 {pass1:.2f}, pass 2 {pass2:.2f} ({n2} points each), one refinement pass {refine:.2f}, "
          f"mask strategy pass {mask:.2f}\n")
    print("| per frame, 5 objects | decoder GFLOP | / encoder GFLOP |")
    print("|---|--:|--:|")
    for name, total in rows:
        print(f"| {name} | {total:.1f} | {total / encoder:.3f} |")


if __name__ == "__main__":
    main()
